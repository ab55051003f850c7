/**
 * The LM head alone on its two kernels (onnxruntime's graph, the native product of packages/expert-kernel) at the
 * bench preset's widths (vocabulary 32768 × hidden 1024), per format and rows: ms per call and GB/s of the weight
 * bytes read, round robin over copies of the head so that the weights come from memory, not from the L3.
 *   node --import tsx bench/lm-head-kernels.ts [--formats float32,int8,int4] [--rows 1,8,32] [--kernels onnxruntime,native] [--calls 48] [--label L] [--out FILE]
 * (`--kernels native` and a label: one build's side of a before/after run, alternated with the other build's.)
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION, memoryWeight, quantizeBlockwise, weightBytes, type BlockwiseQuantized, type WeightData } from '@expertmesh/tensor-ops';
import { createLmHead, type LmHead } from '@expertmesh/model';

const { values } = parseArgs({ options: { formats: { type: 'string', default: 'float32,int8,int4' }, rows: { type: 'string', default: '1,8,32' }, kernels: { type: 'string', default: 'onnxruntime,native' }, label: { type: 'string', default: '' }, calls: { type: 'string', default: '48' }, out: { type: 'string' } } });
const kernels = values.kernels.split(',').map((k) => {
  if (k !== 'onnxruntime' && k !== 'native') throw new Error(`--kernels: ${k} is not onnxruntime or native`);
  return k;
});
const config = parseModelConfig(getPreset('bench').config);
const V = config.vocabSize;
const H = config.hiddenSize;
const COPIES_BYTES = 640 * 2 ** 20;
const CALLS = Number(values.calls);
if (!(CALLS >= 1)) throw new Error(`--calls: ${values.calls} is not a count`);

function seeded(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 48271) % 2147483647) / 2147483647 - 0.5) * scale);
}

/** The process's anonymous memory on transparent huge pages (bytes), where Linux reports it. */
function anonHugePages(): number | null {
  try {
    const kb = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}

const values32 = seeded(V * H, 7, 0.1);
const quantized = new Map<string, BlockwiseQuantized>();
/** A fresh copy of the head in `format` (quantised once per format, its codes and scales copied). */
function weightOf(format: string): WeightData {
  if (format === 'float32') return memoryWeight(values32.slice(), [V, H]);
  let q = quantized.get(format);
  if (!q) quantized.set(format, (q = quantizeBlockwise(values32, V, H, format === 'int8' ? 8 : 4, format === 'int8' ? 128 : 32)));
  return { kind: 'quantized', dims: [V, H], q: { ...q, codes: q.codes.slice(), scales: q.scales.slice() } };
}

const results: { label: string; format: string; kernel: string; rows: number; copies: number; ms: number; weightGBs: number; heldBytes: number; anonHugePageBytes: number | null }[] = [];
for (const format of values.formats.split(',')) {
  const bytes = weightBytes(weightOf(format));
  const copies = Math.max(2, Math.ceil(COPIES_BYTES / bytes));
  for (const kernel of kernels) {
    const heads: LmHead[] = [];
    for (let c = 0; c < copies; c++) heads.push(await createLmHead(config, new Float32Array(H).fill(1), weightOf(format), { ...DEFAULT_EXECUTION, expertKernel: kernel }));
    const hugePageBytes = anonHugePages();
    for (const rows of values.rows.split(',').map(Number)) {
      const x = seeded(rows * H, rows, 2);
      for (let i = 0; i < copies; i++) await heads[i]!.run(x, rows);
      const start = performance.now();
      for (let i = 0; i < CALLS; i++) await heads[i % copies]!.run(x, rows);
      const ms = (performance.now() - start) / CALLS;
      const row = { label: values.label, format, kernel: heads[0]!.kernel, rows, copies, ms, weightGBs: bytes / (ms / 1000) / 1e9, heldBytes: bytes * copies, anonHugePageBytes: hugePageBytes };
      results.push(row);
      console.error(row);
    }
    for (const h of heads) await h.release();
  }
}
const out = values.out ?? join('bench', 'results', `lm-head-kernels-${new Date().toISOString().slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), vocab: V, hidden: H, results }, null, 2)}\n`);
const cell = (kernel: string, format: string, rows: number): string => {
  const r = results.find((m) => m.kernel === kernel && m.format === format && m.rows === rows);
  return r ? `${r.ms.toFixed(2)} (${r.weightGBs.toFixed(1)})` : '–';
};
console.log('| format | rows | onnxruntime ms (GB/s) | native ms (GB/s) |\n|---|---|---|---|');
for (const r of results.filter((r) => r.kernel === kernels[0])) console.log(`| ${r.format} | ${r.rows} | ${cell('onnxruntime', r.format, r.rows)} | ${cell('native', r.format, r.rows)} |`);
