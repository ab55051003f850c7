/**
 * The floor's GEMV against the native kernel's streaming, side by side in one process over the same number of bytes:
 *  - onnxruntime's float32 MatMul with M = 1 over a [8192, N] weight (MLAS's GEMV, as bench/machine-rates.ts measures
 *    the floor's `gemvReadGBs`), on 1 and 2 intra-op threads;
 *  - the addon's streamProbe over a native expert program's weight storage of the same size (float32 experts of
 *    1024 × 1024, one pass doing the least work per byte), on 1 and 2 threads, the storage advised for transparent
 *    huge pages or not (NativeProgramOptions.hugePages), with the region's AnonHugePages read from /proc/self/smaps.
 * Each rate is machine-rates' own (two warm-up runs, then the best mean of three trials of 10 runs), taken in
 * --rounds rounds over every case of a size in turn; the best and the median are reported.
 *   node --import tsx bench/stream-vs-gemv.ts [--sizes 64,128,256,512] [--rounds 3] [--label NAME] [--out FILE]
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NativeExpertProgram } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, f32, Graph, OnnxModelBuilder, type SwigluWeights } from '@expertmesh/tensor-ops';
import { timeIt } from './machine-rates.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '64,128,256,512' }, rounds: { type: 'string', default: '3' }, label: { type: 'string', default: '' }, out: { type: 'string' } } });
const sizes = values.sizes.split(',').map(Number);
const ROUNDS = Number(values.rounds);

/** AnonHugePages (KiB) of the mapping holding `address`, or of the whole process when address is null. */
function anonHugeKiB(address: number | null): number {
  if (address === null) return Number(/AnonHugePages:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? -1);
  let inside = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) inside = parseInt(range[1]!, 16) <= address && address < parseInt(range[2]!, 16);
    else if (inside && line.startsWith('AnonHugePages:')) return Number(line.split(/\s+/)[1]);
  }
  return -1;
}

const W = 1024;
const matrixValues = new Float32Array(W * W).map((_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5);
const rows: Record<string, unknown>[] = [];
const say = (row: Record<string, unknown>) => {
  rows.push(row);
  console.error(JSON.stringify(row));
};

for (const mib of sizes) {
  const experts = Math.max(1, Math.round(mib / 12)); // 12 MiB an expert (three 1024 × 1024 float32 matrices)
  const bytes = experts * 3 * W * W * 4;
  const n = bytes / (8192 * 4);
  const cases: { row: Record<string, unknown>; time: () => Promise<number>; rates: number[] }[] = [];
  const release: (() => Promise<void> | void)[] = [];
  for (const threads of [1, 2]) {
    const b = new OnnxModelBuilder('gemv');
    const x = b.input('x', 'float32', [1, 8192]);
    const w = new Float32Array(8192 * n).fill(0.001);
    b.alias(b.op('MatMul', [x, b.constant({ type: 'float32', dims: [8192, n], bytes: new Uint8Array(w.buffer) })]), 'y');
    b.output('y', 'float32', [1, n]);
    const graph = await Graph.create('gemv', b.toBytes(), { ...DEFAULT_EXECUTION, intraOpThreads: threads });
    const input = new Float32Array(8192).fill(0.01);
    cases.push({ row: { kind: 'onnxruntime GEMV', threads }, time: () => timeIt(10, () => graph.run({ x: f32(input, [1, 8192]) })), rates: [] });
    release.push(() => graph.release());
  }
  for (const hugePages of [false, true]) {
    const weights: SwigluWeights[] = Array.from({ length: experts }, () => ({
      gate: { kind: 'memory', dims: [W, W], data: matrixValues },
      up: { kind: 'memory', dims: [W, W], data: matrixValues },
      down: { kind: 'memory', dims: [W, W], data: matrixValues },
      hidden: W,
      intermediate: W,
    }));
    const program = NativeExpertProgram.create('probe', weights, { threads: 2, hugePages });
    const storage = program.weightStorage();
    const all = Array.from({ length: experts }, (_, e) => e);
    for (const threads of [1, 2]) {
      cases.push({ row: { kind: 'native streamProbe', threads, hugePages, advised: storage.advised, regionAnonHugeKiB: anonHugeKiB(storage.address) }, time: () => timeIt(10, () => program.streamProbe(all, threads)), rates: [] });
    }
    release.push(() => program.release());
  }
  // Rounds over every case in turn: this machine is shared, so a rate is the best of the rounds (a ceiling), with the median beside it.
  for (let round = 0; round < ROUNDS; round++) for (const c of cases) c.rates.push(bytes / (await c.time()) / 1e9);
  for (const c of cases) {
    const sorted = [...c.rates].sort((a, b) => a - b);
    say({ mib: bytes / 2 ** 20, ...c.row, bestGBs: sorted.at(-1), medianGBs: sorted[sorted.length >> 1], rates: c.rates, processAnonHugeKiB: anonHugeKiB(null) });
  }
  for (const r of release) await r();
}

const out = values.out ?? join('bench', 'results', `stream-vs-gemv-${new Date().toISOString().slice(0, 10)}${values.label ? `-${values.label}` : ''}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, JSON.stringify({ date: new Date().toISOString(), label: values.label, rows }, null, 2));
console.error(`wrote ${out}`);
