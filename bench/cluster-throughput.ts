/**
 * Decode throughput of the `bench` preset with its routed experts in this process against 1, 2 and 4
 * expert-shard processes on loopback, at batch 1, 8 and 32; with the time of a MoE layer's dispatch
 * (send, shard compute, receive, combine) and the bytes on the wire per token.
 *   node --import tsx bench/cluster-throughput.ts [--model DIR] [--shards 0,1,2,4] [--batches 1,8,32] [--wire bfloat16]
 */
import { cpus } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall } from '@expertmesh/routed-experts';
import { openExperts, type ExpertsPlacement } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import type { WireDtype } from '@expertmesh/wire';
import { ensureBenchModel } from './bench-model.js';
import { CountingExperts } from './counting-experts.js';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, shards: { type: 'string' }, batches: { type: 'string' }, wire: { type: 'string' }, out: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);
const shardCounts = (values.shards ?? '0,1,2,4').split(',').map(Number);
const batches = (values.batches ?? '1,8,32').split(',').map(Number);
const wireDtype = (values.wire ?? 'bfloat16') as WireDtype;
const identity = await readCheckpointIdentity(modelDir);
const config = identity.config;
const maxBatch = Math.max(...batches);
const cores = cpus().length;

const rows = [];
for (const shards of shardCounts) {
  const cluster = shards > 0 ? await LocalCluster.start({ modelDir, shards, nRoutedExperts: config.nRoutedExperts, shardArgs: ['--intra-op-threads', String(Math.max(1, Math.round(cores / shards)))] }) : null;
  const placement: ExpertsPlacement = cluster ? { kind: 'shards', addresses: cluster.addresses } : { kind: 'in-process' };
  const counting = new CountingExperts(await openExperts(placement, { ...identity, modelDir }, DEFAULT_EXECUTION, { wireDtype, combineDtype: 'bfloat16' }));
  const calls: DispatchCall[] = [];
  counting.observe({ onCall: (c) => calls.push(c) });
  const engine = await Engine.load(modelDir, { experts: counting, sharedExperts: cluster ? 'beside-routed' : 'in-layer', kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
  for (const batch of batches) {
    const run = await runDecode(engine, batch, batch, () => {
      counting.reset();
      calls.length = 0;
    });
    const decodeCalls = calls.splice(0);
    const tokens = batch * DECODE_STEPS;
    const wire = decodeCalls.reduce((a, c) => a + c.hiddenBytes + c.pairBytes + c.responseBytes, 0);
    const shardComputeMs = decodeCalls.reduce((a, c) => a + c.computeMicros / 1000, 0);
    rows.push({
      shards,
      ...run,
      moeLayerMs: counting.layerMs / counting.layerCalls,
      callsPerLayer: decodeCalls.length / counting.layerCalls,
      wireBytesPerToken: cluster ? wire / tokens : 0,
      shardComputeMsPerLayer: cluster ? shardComputeMs / counting.layerCalls : null,
    });
    console.error(rows.at(-1));
  }
  await engine.close();
  await cluster?.stop();
}

const base = new Map(rows.filter((r) => r.shards === 0).map((r) => [r.batch, r.decodeTokensPerSecond]));
const report = { date: new Date().toISOString(), cores, wireDtype, model: 'bench preset', rows };
const out = values.out ?? join('bench', 'results', `cluster-throughput-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| experts | batch | decode tok/s | vs in-process | MoE layer ms (dispatch+combine) | shard compute ms/layer (sum) | calls/layer | wire bytes/token |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const rel = base.get(r.batch) ? `${((100 * r.decodeTokensPerSecond) / base.get(r.batch)!).toFixed(0)} %` : '';
  console.log(
    `| ${r.shards === 0 ? 'in-process' : `${r.shards} shard${r.shards > 1 ? 's' : ''}`} | ${r.batch} | ${r.decodeTokensPerSecond.toFixed(1)} | ${rel} | ${r.moeLayerMs.toFixed(2)} | ${r.shardComputeMsPerLayer?.toFixed(2) ?? '–'} | ${r.callsPerLayer.toFixed(1)} | ${r.wireBytesPerToken.toFixed(0)} |`,
  );
}
