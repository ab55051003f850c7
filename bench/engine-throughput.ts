/**
 * In-process prefill and decode throughput of the `bench` preset at batch 1, 8 and 32, each set
 * against its floor: max(FLOPs / matmul rate, bytes / memory bandwidth) measured on this machine,
 * the bytes counted in the format the weights are held in. Also resident memory after load and
 * after the runs, against the weight bytes held plus the KV cache.
 * --expert-kernel native runs the float32 or int8/int4 routed experts on the native grouped kernel (packages/expert-kernel).
 *   node --import tsx bench/engine-throughput.ts [--model DIR] [--weight-dtype float32|int8|int4|auto] [--expert-kernel auto|onnxruntime|native] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { returnIdleMemory } from '@expertmesh/expert-kernel';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { matrixBytes, WEIGHT_DTYPES, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION, EXPERT_KERNELS, type ExpertKernel } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { ensureBenchModel } from './bench-model.js';
import { CountingExperts } from './counting-experts.js';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { measureMachineRates } from './machine-rates.js';
import { decodeStepCost } from './model-cost.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' }, batches: { type: 'string' }, 'weight-dtype': { type: 'string', default: 'float32' }, 'expert-kernel': { type: 'string', default: 'onnxruntime' } } });
const expertKernel = values['expert-kernel'] as ExpertKernel;
if (!EXPERT_KERNELS.includes(expertKernel)) throw new Error(`--expert-kernel must be one of ${EXPERT_KERNELS.join(', ')}`);
const weightDtype = values['weight-dtype'] as WeightDtype;
if (!WEIGHT_DTYPES.includes(weightDtype)) throw new Error(`--weight-dtype must be one of ${WEIGHT_DTYPES.join(', ')}`);
const modelDir = await ensureBenchModel(values.model);
const batches = (values.batches ?? '1,8,32').split(',').map(Number);

const rates = await measureMachineRates();
console.error('machine', rates);
const config = await loadModelConfig(modelDir);

const checkpoint = await SafetensorsCheckpoint.open(modelDir);
const loadStart = performance.now();
const local = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, weightDtype), { ...DEFAULT_EXECUTION, expertKernel });
const experts = new CountingExperts(local);
await checkpoint.close();
const maxBatch = Math.max(...batches);
const engine = await Engine.load(modelDir, { experts, weightDtype, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
console.error(`loaded in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);
// Bytes per parameter of a product matrix as held (the floor reads every weight once per step).
const bytesPerParameter = matrixBytes(1024, 1024, 'BF16', weightDtype, null) / (1024 * 1024);
const memory = (): { rssBytes: number; weightBytes: number; kvCacheBytes: number; rssOverWeightsAndKv: number } => {
  const weightBytes = engine.model.denseWeightBytes + local.weightBytes;
  const rssBytes = process.memoryUsage().rss;
  return { rssBytes, weightBytes, kvCacheBytes: engine.kvCacheBytes, rssOverWeightsAndKv: rssBytes / (weightBytes + engine.kvCacheBytes) };
};
const memoryAfterLoad = memory();
console.error('memory after load', memoryAfterLoad);

const rows = [];
for (const batch of batches) {
  const run = await runDecode(engine, batch, batch, () => experts.reset());
  const distinct = experts.distinctExpertCalls / DECODE_STEPS;
  const cost = decodeStepCost(config, batch, PROMPT_TOKENS + DECODE_STEPS / 2, distinct, bytesPerParameter);
  const computeFloor = cost.flops / (rates.matmulGflops * 1e9);
  const memoryFloor = cost.bytes / (rates.gemvReadGBs * 1e9);
  const floor = Math.max(computeFloor, memoryFloor);
  // The routed experts' share of a decode step: their time (every MoE layer's call) against their own bytes' floor.
  const steps = experts.layerCalls / config.moeLayers.length;
  const expertMsPerStep = experts.layerMs / steps;
  const expertFloorMs = ((distinct * 3 * config.hiddenSize * config.moeIntermediateSize * bytesPerParameter) / (rates.gemvReadGBs * 1e9)) * 1000;
  rows.push({
    ...run,
    distinctExpertsPerStep: distinct,
    weightGBPerStep: cost.bytes / 1e9,
    gflopPerStep: cost.flops / 1e9,
    computeFloorMs: computeFloor * 1000,
    memoryFloorMs: memoryFloor * 1000,
    boundBy: memoryFloor > computeFloor ? 'memory' : 'compute',
    fractionOfFloor: floor / (run.decodeStepMs / 1000),
    expertMsPerStep,
    expertFloorMs,
  });
  console.error(rows.at(-1));
}
const memoryAfterRuns = memory();
// What a serving router does once idle (EngineLoop's idle heap return): freed activations' pages back to the kernel.
const idleHeapReturn = returnIdleMemory();
const memoryAfterIdleReturn = memory();
await engine.close();

const report = { date: new Date().toISOString(), machine: rates, model: `bench preset (bfloat16 checkpoint), weights held as ${weightDtype} (${local.weightFormat}), experts on ${expertKernel}`, weightDtype, expertKernel, bytesPerParameter, promptTokens: PROMPT_TOKENS, decodeSteps: DECODE_STEPS, memoryAfterLoad, memoryAfterRuns, idleHeapReturn, memoryAfterIdleReturn, rows };
const out = values.out ?? join('bench', 'results', `engine-throughput-${weightDtype}-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
console.log(`${weightDtype} (${expertKernel} experts): weights ${mib(memoryAfterRuns.weightBytes)} MiB + KV ${mib(memoryAfterRuns.kvCacheBytes)} MiB; resident ${mib(memoryAfterLoad.rssBytes)} MiB after load (${memoryAfterLoad.rssOverWeightsAndKv.toFixed(2)}×), ${mib(memoryAfterRuns.rssBytes)} MiB after the runs (${memoryAfterRuns.rssOverWeightsAndKv.toFixed(2)}×), ${mib(memoryAfterIdleReturn.rssBytes)} MiB after the idle heap return (${memoryAfterIdleReturn.rssOverWeightsAndKv.toFixed(2)}×, ${((idleHeapReturn?.microseconds ?? 0) / 1000).toFixed(1)} ms)`);
console.log('| batch | prefill tok/s | decode tok/s | step ms | floor ms (compute / memory) | bound | % of floor | routed experts ms / their floor |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.batch} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeStepMs.toFixed(1)} | ${r.computeFloorMs.toFixed(1)} / ${r.memoryFloorMs.toFixed(1)} | ${r.boundBy} | ${(100 * r.fractionOfFloor).toFixed(0)} % | ${r.expertMsPerStep.toFixed(1)} / ${r.expertFloorMs.toFixed(1)} |`,
  );
}
