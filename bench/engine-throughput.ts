/**
 * In-process prefill and decode throughput of the `bench` preset at batch 1, 8 and 32, each set
 * against its floor: max(FLOPs / matmul rate, bytes / memory bandwidth) measured on this machine.
 *   node --import tsx bench/engine-throughput.ts [--model DIR] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { WeightReader } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { ensureBenchModel } from './bench-model.js';
import { CountingExperts } from './counting-experts.js';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { measureMachineRates } from './machine-rates.js';
import { decodeStepCost } from './model-cost.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' }, batches: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);
const batches = (values.batches ?? '1,8,32').split(',').map(Number);

const rates = await measureMachineRates();
console.error('machine', rates);
const config = await loadModelConfig(modelDir);

const checkpoint = await SafetensorsCheckpoint.open(modelDir);
const loadStart = performance.now();
const experts = new CountingExperts(await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config), DEFAULT_EXECUTION));
await checkpoint.close();
const maxBatch = Math.max(...batches);
const engine = await Engine.load(modelDir, { experts, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
console.error(`loaded in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);

const rows = [];
for (const batch of batches) {
  const run = await runDecode(engine, batch, batch, () => experts.reset());
  const distinct = experts.distinctExpertCalls / DECODE_STEPS;
  const cost = decodeStepCost(config, batch, PROMPT_TOKENS + DECODE_STEPS / 2, distinct);
  const computeFloor = cost.flops / (rates.matmulGflops * 1e9);
  const memoryFloor = cost.bytes / (rates.gemvReadGBs * 1e9);
  const floor = Math.max(computeFloor, memoryFloor);
  rows.push({
    ...run,
    distinctExpertsPerStep: distinct,
    weightGBPerStep: cost.bytes / 1e9,
    gflopPerStep: cost.flops / 1e9,
    computeFloorMs: computeFloor * 1000,
    memoryFloorMs: memoryFloor * 1000,
    boundBy: memoryFloor > computeFloor ? 'memory' : 'compute',
    fractionOfFloor: floor / (run.decodeStepMs / 1000),
  });
  console.error(rows.at(-1));
}
await engine.close();

const report = { date: new Date().toISOString(), machine: rates, model: 'bench preset (bfloat16 checkpoint, float32 in memory)', promptTokens: PROMPT_TOKENS, decodeSteps: DECODE_STEPS, rows };
const out = values.out ?? join('bench', 'results', `engine-throughput-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| batch | prefill tok/s | decode tok/s | step ms | floor ms (compute / memory) | bound | % of floor |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.batch} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeStepMs.toFixed(1)} | ${r.computeFloorMs.toFixed(1)} / ${r.memoryFloorMs.toFixed(1)} | ${r.boundBy} | ${(100 * r.fractionOfFloor).toFixed(0)} % |`,
  );
}
