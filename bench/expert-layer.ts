/**
 * One MoE layer's routed experts, alone, at the `bench` preset's widths (hidden 1024, 64 experts of
 * width 512, top-8): milliseconds per layer call at batch 1, 8 and 32 against the layer's floor, per
 * format (float32, int8, int4), through the same LocalRoutedExperts the engine and the shards use.
 *   floor = max(bytes of the distinct chosen experts, as held / GEMV read rate, FLOPs / matmul rate)
 * Also, per format, the same layer with experts of width 8 ("dispatch"): the weights are then too
 * small to matter, so its time is what the layout costs beyond streaming the weights (operator
 * dispatch, thread wake-ups, gathers, the run itself). At batch 1, "held only" runs a layer that
 * holds just the 8 chosen experts: what the layer would cost if unchosen experts were free.
 * Weights are synthetic (seeded); 16 routings are cycled so the chosen experts' bytes exceed the caches.
 * int8/int4 run on each expert kernel of --kernels (onnxruntime's MatMulNBits graphs, the native grouped kernel).
 *   node --import tsx bench/expert-layer.ts [--formats float32,int8,int4] [--batches 1,8,32] [--kernels onnxruntime,native] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { DEFAULT_EXECUTION, type ExecutionOptions, type ExpertKernel } from '@expertmesh/tensor-ops';
import type { ExpertPairs } from '@expertmesh/routed-experts';
import { measureMachineRates } from './machine-rates.js';
import { randomPairs, seeded, syntheticExperts, type Format } from './synthetic-experts.js';

const { values } = parseArgs({ options: { formats: { type: 'string', default: 'float32,int8,int4' }, batches: { type: 'string', default: '1,8,32' }, kernels: { type: 'string', default: 'onnxruntime,native' }, out: { type: 'string' } } });
const formats = values.formats.split(',') as Format[];
const batches = values.batches.split(',').map(Number);
const kernels = values.kernels.split(',') as ExpertKernel[];
const ROUTINGS = 16;
const LAYER = 1;

/** Best mean ms per call over 3 trials of cycling every case twice (after a warm-up pass). */
async function timeCalls(cases: readonly (() => Promise<unknown>)[]): Promise<number> {
  for (const c of cases) await c();
  let best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    const t0 = performance.now();
    for (let round = 0; round < 2; round++) for (const c of cases) await c();
    best = Math.min(best, (performance.now() - t0) / (2 * cases.length));
  }
  return best;
}

const rates = await measureMachineRates();
console.error('machine', rates);
const preset = getPreset('bench').config;
const benchWidth = parseModelConfig(preset).moeIntermediateSize;
const rows: Record<string, unknown>[] = [];
for (const format of formats) {
 for (const kernel of kernels) {
  const execution: ExecutionOptions = { ...DEFAULT_EXECUTION, expertKernel: kernel };
  for (const width of [benchWidth, 8]) {
    const config = parseModelConfig({ ...preset, moe_intermediate_size: width });
    const H = config.hiddenSize;
    const all = Array.from({ length: config.nRoutedExperts }, (_, e) => e);
    const experts = await LocalRoutedExperts.load(config, syntheticExperts(config, format), execution, (layer) => (layer === LAYER ? all : []));
    const expertBytes = experts.weightBytes / all.length;
    const measure = async (layout: string, batch: number, run: (pairs: ExpertPairs, x: Float32Array, i: number) => Promise<unknown>, among: (i: number) => readonly number[]): Promise<void> => {
      const cases = Array.from({ length: ROUTINGS }, (_, i) => ({ pairs: randomPairs(batch, config.numExpertsPerTok, among(i), 100 * batch + i), x: seeded(batch * H, 7 + i) }));
      const ms = await timeCalls(cases.map((c, i) => () => run(c.pairs, c.x, i)));
      const distinct = cases.reduce((a, c) => a + new Set(c.pairs.expertIds).size, 0) / cases.length;
      const bytes = distinct * expertBytes;
      const flops = 2 * batch * config.numExpertsPerTok * 3 * H * width;
      const memoryFloorMs = (bytes / (rates.gemvReadGBs * 1e9)) * 1000;
      const computeFloorMs = (flops / (rates.matmulGflops * 1e9)) * 1000;
      const row = { format, kernel, width, layout, batch, ms, distinctExperts: distinct, expertMB: bytes / 1e6, memoryFloorMs, computeFloorMs, fractionOfFloor: Math.max(memoryFloorMs, computeFloorMs) / ms };
      rows.push(row);
      console.error(JSON.stringify(row));
    };
    const layout = width === 8 ? 'dispatch' : 'layer';
    for (const batch of batches) await measure(layout, batch, (p, x) => experts.computePairs(LAYER, x, batch, p), () => all);
    await experts.close();
    if (width === 8 || !batches.includes(1)) continue;
    // Eight layers of 8 experts each; routing i chooses all of group i % 8's experts.
    const groups = await Promise.all(Array.from({ length: 8 }, (_, g) => LocalRoutedExperts.load(config, syntheticExperts(config, format), execution, (layer) => (layer === LAYER ? all.slice(8 * g, 8 * g + 8) : []))));
    await measure('held only', 1, (p, x, i) => groups[i % 8]!.computePairs(LAYER, x, 1, p), (i) => all.slice(8 * (i % 8), 8 * (i % 8) + 8));
    for (const g of groups) await g.close();
  }
 }
}

console.log('| format | kernel | layout | batch | ms per layer | distinct experts | floor ms (memory / compute) | % of floor |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows as { format: string; kernel: string; layout: string; batch: number; ms: number; distinctExperts: number; memoryFloorMs: number; computeFloorMs: number; fractionOfFloor: number }[]) {
  console.log(`| ${r.format} | ${r.kernel} | ${r.layout} | ${r.batch} | ${r.ms.toFixed(2)} | ${r.distinctExperts.toFixed(1)} | ${r.memoryFloorMs.toFixed(2)} / ${r.computeFloorMs.toFixed(2)} | ${(100 * r.fractionOfFloor).toFixed(0)} % |`);
}
const report = { date: new Date().toISOString(), machine: rates, rows };
const out = values.out ?? join('bench', 'results', `expert-layer-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
