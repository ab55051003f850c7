/**
 * Where a float32 graph's session creation goes at DeepSeek-R1's widths: one product y = x · Wᵀ over a float32 weight
 * W [rows, cols] baked into the model, built three ways, each timed (onnxruntime session creation runs on the calling
 * thread) with the process's peak resident memory over the build:
 *   transpose-folded: MatMul(x, Transpose(W)), the layout `linear` bakes (onnxruntime folds the Transpose at creation);
 *   pre-transposed:   MatMul(x, Wᵀ) with Wᵀ transposed here, no Transpose left to fold;
 *   gemm-transb:      Gemm(x, W, transB = 1) over the weight as it is (onnxruntime's Gemm pre-packs a transposed B itself);
 *   optimisation off: the first layout with graph optimisation disabled (nothing folded, nothing fused).
 * Then each session's runs at M = 1, 8 and 32 rows (median of --runs), and whether its outputs equal the first layout's bit for bit.
 *   node --import tsx bench/float32-graph-build.ts [--rows 7168] [--cols 16384] [--threads 1] [--out FILE]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_EXECUTION, f32, Graph, OnnxModelBuilder, type GraphOptimization } from '@expertmesh/tensor-ops';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '7168' }, cols: { type: 'string', default: '16384' }, threads: { type: 'string', default: '1' }, layouts: { type: 'string', default: 'transpose-folded,pre-transposed,gemm-transb,optimisation-off' }, runs: { type: 'string', default: '15' }, out: { type: 'string' } } });
const rows = Number(values.rows);
const cols = Number(values.cols);
const w = new Float32Array(rows * cols);
for (let i = 0; i < w.length; i++) w[i] = Math.sin(i) * 0.02;

function transposed(src: Float32Array, r: number, c: number): Float32Array {
  const out = new Float32Array(r * c);
  const T = 64;
  for (let i0 = 0; i0 < r; i0 += T) for (let j0 = 0; j0 < c; j0 += T) for (let i = i0; i < Math.min(i0 + T, r); i++) for (let j = j0; j < Math.min(j0 + T, c); j++) out[j * r + i] = src[i * c + j]!;
  return out;
}

function peakSinceLast(): number {
  const peak = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;
  writeFileSync('/proc/self/clear_refs', '5');
  return peak;
}

const rssMiB = (b: number): number => Math.round(b / 2 ** 20);
const x = new Float32Array(32 * cols).map((_, i) => Math.cos(i));
const results = [];
let reference: Float32Array | null = null;
const referenceByRows: Record<number, Float32Array> = {};
for (const layout of values.layouts.split(',')) {
  const b = new OnnxModelBuilder(layout);
  const input = b.input('x', 'float32', ['T', cols]);
  let optimization: GraphOptimization = 'all';
  let prepare = 0;
  if (layout === 'pre-transposed') {
    const t0 = performance.now();
    const wt = transposed(w, rows, cols);
    prepare = performance.now() - t0;
    b.alias(b.op('MatMul', [input, b.float32Weight(wt, [cols, rows], 'w').name]), 'y');
  } else if (layout === 'gemm-transb') {
    b.alias(b.op('Gemm', [input, b.float32Weight(w, [rows, cols], 'w').name], { transB: 1 }), 'y');
  } else {
    b.alias(b.op('MatMul', [input, b.op('Transpose', [b.float32Weight(w, [rows, cols], 'w').name], { perm: [1, 0] })]), 'y');
    if (layout === 'optimisation-off') optimization = 'disabled';
  }
  b.output('y', 'float32', ['T', rows]);
  const t1 = performance.now();
  const built = { ...b.build(), optimization };
  const serialise = performance.now() - t1;
  const before = peakSinceLast();
  const t2 = performance.now();
  const graph = await Graph.create(layout, built, { ...DEFAULT_EXECUTION, intraOpThreads: Number(values.threads) });
  const create = performance.now() - t2;
  const peak = peakSinceLast();
  const t3 = performance.now();
  const y = (await graph.run({ x: f32(x, [32, cols]) })).y!.data as Float32Array;
  const firstRun = performance.now() - t3;
  let same = reference === null ? null : y.every((v, i) => Object.is(v, reference![i]));
  reference ??= y;
  // Later runs at 1, 8 and 32 rows (a decode step's products at batch 1, 8, 32), median ms.
  const runMs: Record<string, number> = {};
  for (const m of [1, 8, 32]) {
    const times: number[] = [];
    for (let k = 0; k < Number(values.runs); k++) {
      const t = performance.now();
      const ym = (await graph.run({ x: f32(x.subarray(0, m * cols), [m, cols]) })).y!.data as Float32Array;
      times.push(performance.now() - t);
      if (k > 0) continue;
      const first = (referenceByRows[m] ??= ym);
      if (same !== null) same &&= ym.every((v, i) => Object.is(v, first[i]));
    }
    runMs[`m${m}`] = Number(times.sort((a, b) => a - b)[times.length >> 1]!.toFixed(2));
  }
  await graph.release();
  const r = { layout, rows, cols, weightMiB: rssMiB(w.byteLength), prepareMs: Math.round(prepare), serialiseMs: Math.round(serialise), createMs: Math.round(create), firstRunMs: Math.round(firstRun), runMs, peakBeforeCreateMiB: rssMiB(before), peakDuringCreateMiB: rssMiB(peak), sameBitsAsFirst: same };
  console.log(JSON.stringify(r));
  results.push(r);
}
if (values.out) writeFileSync(values.out, `${JSON.stringify({ date: new Date().toISOString(), results }, null, 2)}\n`);
