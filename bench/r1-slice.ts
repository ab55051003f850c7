/**
 * The r1-slice checkpoint (every width of DeepSeek-R1, 2 layers, 256 experts, FP8 as it ships) served
 * as a cluster on this machine: a router (this process) and 4 expert-shard processes of 64 experts,
 * all holding the checkpoint's format. Reports each process's resident memory against `plan`'s
 * prediction, load times, decode throughput and the MoE round trip at batch 1, 8, 32 and 128 for
 * bfloat16 and fp8 dispatch, and checks a float32-wire generation equals the in-process engine.
 *   npx expertmesh init-model --preset r1-slice --out .tmp/models/r1-slice
 *   node --import tsx bench/r1-slice.ts [--model DIR] [--batches 1,8,32,128] [--steps 3] [--prompt 8]
 */
import { cpus, totalmem } from 'node:os';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine, GREEDY } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { layoutFromCheckpoint, predictExpertBytes, predictRouterMemory, readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall } from '@expertmesh/routed-experts';
import { openExperts } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import type { WireDtype } from '@expertmesh/wire';
import { CountingExperts } from './counting-experts.js';
import { runDecode } from './decode-run.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, batches: { type: 'string' }, steps: { type: 'string' }, prompt: { type: 'string' }, out: { type: 'string' }, wires: { type: 'string' } } });
const modelDir = values.model ?? join('.tmp', 'models', 'r1-slice');
if (!existsSync(join(modelDir, 'config.json'))) {
  console.error(`no checkpoint in ${modelDir}: write it first with  npx expertmesh init-model --preset r1-slice --out ${modelDir}  (~16 GB)`);
  process.exit(2);
}
const batches = (values.batches ?? '1,8,32,128').split(',').map(Number);
const lengths = { promptTokens: Number(values.prompt ?? 8), decodeSteps: Number(values.steps ?? 3) };
const wires = (values.wires ?? 'bfloat16,fp8').split(',') as WireDtype[];
const SHARDS = 4;
const GiB = 2 ** 30;
const config = await loadModelConfig(modelDir);
const maxBatch = Math.max(...batches);
const MAX_BATCHED_TOKENS = 256;
const prefillSteps = Math.ceil((maxBatch * lengths.promptTokens) / MAX_BATCHED_TOKENS);
const kvCacheTokens = maxBatch * (lengths.promptTokens + lengths.decodeSteps + prefillSteps + 2 + 16);

const ck = await SafetensorsCheckpoint.open(modelDir);
const layout = layoutFromCheckpoint(config, ck);
await ck.close();
const predicted = { router: predictRouterMemory(config, layout, 'auto', kvCacheTokens), shard: (config.nRoutedExperts / SHARDS) * config.moeLayers.length * predictExpertBytes(config, layout, 'auto') };
console.error('plan predicts', { routerGiB: predicted.router.total / GiB, shardGiB: predicted.shard / GiB });

// --- the cluster ---------------------------------------------------------------------------------
const t0 = performance.now();
const cluster = await LocalCluster.start({ modelDir, shards: SHARDS, nRoutedExperts: config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1'], startTimeoutMs: 600_000 });
const shardsReadyS = (performance.now() - t0) / 1000;
console.error({ shardsReadyS });
const identity = await readCheckpointIdentity(modelDir);
async function connect(wireDtype: WireDtype, combineDtype: 'bfloat16' | 'float32'): Promise<{ engine: Engine; counting: CountingExperts; readyS: number }> {
  const start = performance.now();
  const counting = new CountingExperts(await openExperts({ kind: 'shards', addresses: cluster.addresses }, { ...identity, modelDir }, DEFAULT_EXECUTION, { wireDtype, combineDtype, deadline: { minMs: 600_000, maxMs: 600_000, p99Multiple: 4 } }));
  const engine = await Engine.load(modelDir, { experts: counting, kvCacheTokens, maxBatchSize: maxBatch, maxBatchedTokens: MAX_BATCHED_TOKENS });
  return { engine, counting, readyS: (performance.now() - start) / 1000 };
}

const rows = [];
let routerReadyS = 0;
let memory: { process: string; predictedBytes: number; reportedBytes: number; residentBytes: number; readyS: number }[] = [];
const prompt = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => (i * 7919 + 11) % config.vocabSize);
const request = { promptTokenIds: prompt, maxTokens: 4, sampling: GREEDY, ignoreEos: true, captureLogits: true };
let viaShards: Awaited<ReturnType<Engine['generate']>>[number] | undefined;
try {
  for (const wire of wires) {
    const { engine, counting, readyS } = await connect(wire, 'bfloat16');
    routerReadyS ||= readyS;
    const calls: DispatchCall[] = [];
    counting.observe({ onCall: (c) => calls.push(c) });
    for (const batch of batches) {
      let decodeCalls: DispatchCall[] = [];
      let layerMs = 0;
      let layerCalls = 0;
      const run = await runDecode(
        engine,
        batch,
        batch,
        () => {
          counting.reset();
          calls.length = 0;
        },
        { ...lengths, prefillSteps: Math.ceil((batch * lengths.promptTokens) / MAX_BATCHED_TOKENS) },
        () => {
          decodeCalls = calls.splice(0);
          ({ layerMs, layerCalls } = counting);
        },
      );
      calls.length = 0;
      const tokens = run.decodeTokens;
      rows.push({
        wire,
        ...run,
        moeLayerMs: layerMs / layerCalls,
        shardComputeMsPerLayer: decodeCalls.reduce((a, c) => a + c.computeMicros / 1000, 0) / layerCalls,
        callsPerLayer: decodeCalls.length / layerCalls,
        wireBytesPerToken: decodeCalls.reduce((a, c) => a + c.hiddenBytes + c.pairBytes + c.responseBytes, 0) / tokens,
      });
      console.error(rows.at(-1));
    }
    // Memory after every expert has run (the largest batch touches all of them): what each process holds.
    const holders = await counting.holders(10_000);
    memory = [
      { process: 'router', predictedBytes: predicted.router.total, reportedBytes: engine.model.denseWeightBytes + engine.kvCacheBytes, residentBytes: process.memoryUsage().rss, readyS: routerReadyS },
      ...holders.map((h) => ({ process: h.shardId, predictedBytes: predicted.shard, reportedBytes: h.weightBytes, residentBytes: h.residentBytes, readyS: shardsReadyS })),
    ];
    console.error(memory);
    await engine.close();
  }

  // --- equality: float32 wire against the in-process engine ---------------------------------------
  const exact = await connect('float32', 'float32');
  [viaShards] = await exact.engine.generate([request]);
  await exact.engine.close();
} finally {
  await cluster.stop();
}
const local = await Engine.load(modelDir, { experts: await openExperts({ kind: 'in-process' }, { ...identity, modelDir }, DEFAULT_EXECUTION), kvCacheTokens: 64 });
const [inProcess] = await local.generate([request]);
await local.close();
let maxRel = 0;
viaShards!.logits.forEach((l, s) => {
  const ref = inProcess!.logits[s]!;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(l[i]! - ref[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  maxRel = Math.max(maxRel, diff / scale);
});
const equality = { tokensEqual: JSON.stringify(viaShards!.tokenIds) === JSON.stringify(inProcess!.tokenIds), tokens: viaShards!.tokenIds, maxRelativeLogitError: maxRel };
console.error(equality);

const report = { date: new Date().toISOString(), machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: totalmem() / GiB }, lengths, kvCacheTokens, predicted, memory, rows, equality };
const out = values.out ?? join('bench', 'results', `r1-slice-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| process | plan predicts GiB | reports GiB | resident GiB | ready s |');
console.log('|---|---|---|---|---|');
for (const m of memory) console.log(`| ${m.process} | ${(m.predictedBytes / GiB).toFixed(2)} | ${(m.reportedBytes / GiB).toFixed(2)} | ${(m.residentBytes / GiB).toFixed(2)} | ${m.readyS.toFixed(1)} |`);
console.log(`| total | ${(memory.reduce((a, m) => a + m.predictedBytes, 0) / GiB).toFixed(2)} | | ${(memory.reduce((a, m) => a + m.residentBytes, 0) / GiB).toFixed(2)} | |`);
console.log('');
console.log('| wire | batch | decode tok/s | step ms | MoE layer round trip ms | shard compute ms/layer (sum) | calls/layer | wire bytes/token |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.wire} | ${r.batch} | ${r.decodeTokensPerSecond.toFixed(2)} | ${r.decodeStepMs.toFixed(0)} | ${r.moeLayerMs.toFixed(1)} | ${r.shardComputeMsPerLayer.toFixed(1)} | ${r.callsPerLayer.toFixed(1)} | ${r.wireBytesPerToken.toFixed(0)} |`);
}
console.log('');
console.log(`float32 wire vs in-process: tokens ${equality.tokensEqual ? 'equal' : 'DIFFER'} (${equality.tokens.join(', ')}), max relative logit difference ${equality.maxRelativeLogitError.toExponential(2)}`);
