/**
 * Resident memory of expert-shard processes against the expert bytes each reports holding, after load
 * and after the `bench:engine` runs (prefill + decode at batch 1, 8 and 32) driven through them, with
 * each EXPERTMESH_MALLOC_ENV given: off (glibc's defaults), glibc (two arenas: what `up` and the
 * local cluster set by default), jemalloc (preloaded). Measured again after a few seconds idle (jemalloc's
 * background thread returns freed pages on a timer).
 * `--runtime compiled` runs this benchmark, and so the shard processes it starts, from the compiled build (plain node).
 * At real width (the r1-slice preset: a step costs seconds) `--prompt-tokens` and `--decode-steps` shorten the runs and
 * `--start-timeout-ms` gives shards that quantise tens of GB of FP8 experts at load the time they need.
 *   node --import tsx bench/shard-memory.ts [--model DIR] [--formats int8,float32] [--shards 2] [--batches 1,8,32] [--malloc off,glibc,jemalloc] [--expert-kernel onnxruntime|native] [--runtime sources|compiled] [--prompt-tokens 128] [--decode-steps 16] [--start-timeout-ms 120000] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity, type WeightDtype } from '@expertmesh/model-weights';
import { MALLOC_ENVIRONMENT_SWITCH, RUNS_COMPILED, spawnTied } from '@expertmesh/process-lifecycle';
import { openExperts } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { ensureBenchModel } from './bench-model.js';
import { residentDetail, type ResidentDetail } from './resident-by-kind.js';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { buildWithEntries, parseRuntime } from './compiled-build.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, formats: { type: 'string', default: 'int8,float32' }, shards: { type: 'string', default: '2' }, batches: { type: 'string', default: '1,8,32' }, malloc: { type: 'string', default: 'off,glibc,jemalloc' }, 'expert-kernel': { type: 'string', default: 'onnxruntime' }, runtime: { type: 'string', default: 'sources' }, 'prompt-tokens': { type: 'string', default: String(PROMPT_TOKENS) }, 'decode-steps': { type: 'string', default: String(DECODE_STEPS) }, 'start-timeout-ms': { type: 'string' }, out: { type: 'string' } } });
const runtime = parseRuntime(values.runtime);
if (runtime === 'compiled' && !RUNS_COMPILED) {
  // Run again from the compiled build: the local cluster then starts the build's shards, without tsx.
  const entry = join(buildWithEntries('shard-memory', { 'shard-memory': 'bench/shard-memory.ts' }), 'shard-memory.mjs');
  // Not a Node child to spawnTied: the same environment as this process (no malloc settings added).
  const child = spawnTied(process.execPath, [entry, ...process.argv.slice(2)], { stdio: ['ignore', 'inherit', 'inherit'] });
  process.exit(await new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1))));
}
const modelDir = await ensureBenchModel(values.model);
const identity = await readCheckpointIdentity(modelDir);
const batches = values.batches.split(',').map(Number);
const maxBatch = Math.max(...batches);
const shards = Number(values.shards);
const lengths = { promptTokens: Number(values['prompt-tokens']), decodeSteps: Number(values['decode-steps']) };
const startTimeoutMs = values['start-timeout-ms'] === undefined ? undefined : Number(values['start-timeout-ms']);
const mib = (b: number): string => (b / 2 ** 20).toFixed(0);

const results = [];
for (const format of values.formats.split(',') as WeightDtype[]) {
  for (const malloc of values.malloc.split(',')) {
    const cluster = await LocalCluster.start({ modelDir, shards, nRoutedExperts: identity.config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1', '--weight-dtype', format, '--expert-kernel', values['expert-kernel']], env: { [MALLOC_ENVIRONMENT_SWITCH]: malloc }, ...(startTimeoutMs === undefined ? {} : { startTimeoutMs }) });
    try {
      const experts = await openExperts({ kind: 'shards', addresses: cluster.addresses }, { ...identity, modelDir }, DEFAULT_EXECUTION, { wireDtype: 'float32', combineDtype: 'float32' });
      const engine = await Engine.load(modelDir, { experts, weightDtype: format, kvCacheTokens: maxBatch * (lengths.promptTokens + lengths.decodeSteps + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
      // Each shard process's resident bytes by kind of mapping (same host: its /proc/PID/smaps).
      const detailOf = (shardId: string): ResidentDetail | null => {
        const pid = cluster.shards.find((s) => s.id === shardId)?.process.pid;
        return pid ? residentDetail(pid) : null;
      };
      const held = async (): Promise<{ shardId: string; weightBytes: number; residentBytes: number; ratio: number; detail: ResidentDetail | null }[]> =>
        (await experts.holders(10_000)).map((h) => ({ shardId: h.shardId, weightBytes: h.weightBytes, residentBytes: h.residentBytes, ratio: h.residentBytes / h.weightBytes, detail: detailOf(h.shardId) }));
      // This process is the router: its resident memory against the dense weights and KV cache it holds.
      const router = (): { residentBytes: number; weightBytes: number; kvCacheBytes: number } => ({ residentBytes: process.memoryUsage.rss(), weightBytes: engine.model.denseWeightBytes, kvCacheBytes: engine.kvCacheBytes });
      const afterLoad = await held();
      const routerAfterLoad = router();
      const runs = [];
      for (const batch of batches) runs.push(await runDecode(engine, batch, batch, undefined, lengths));
      const afterRuns = await held();
      const routerAfterRuns = router();
      await new Promise((r) => setTimeout(r, 3000));
      const afterIdle = await held();
      const routerAfterIdle = router();
      await engine.close();
      for (const [phase, hs] of [['after load', afterLoad], ['after runs', afterRuns], ['after 3 s idle', afterIdle]] as const) {
        console.error(`${format} malloc-env ${malloc} ${phase}: ${hs.map((h) => `${h.shardId} ${mib(h.residentBytes)} MiB for ${mib(h.weightBytes)} MiB (${h.ratio.toFixed(2)}×)${h.detail ? ` [heap ${mib(h.detail.brkHeap)}, anon ${mib(h.detail.anonymousMappings)}, node ${mib(h.detail.nodeBinary)}, ort ${mib(h.detail.onnxruntimeLibrary)}, libs ${mib(h.detail.otherLibraries)}, ckpt ${mib(h.detail.checkpointFiles)}]` : ''}`).join(', ')}`);
      }
      for (const [phase, r] of [['after load', routerAfterLoad], ['after runs', routerAfterRuns], ['after 3 s idle', routerAfterIdle]] as const) {
        console.error(`${format} router (this process) ${phase}: ${mib(r.residentBytes)} MiB for ${mib(r.weightBytes)} + kv ${mib(r.kvCacheBytes)} MiB (${(r.residentBytes / (r.weightBytes + r.kvCacheBytes)).toFixed(2)}×)`);
      }
      for (const r of runs) console.error(`  batch ${r.batch}: prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s`);
      results.push({ format, expertKernel: values['expert-kernel'], runtime, mallocEnvironment: malloc, shards, ...lengths, afterLoad, afterRuns, afterIdle, router: { afterLoad: routerAfterLoad, afterRuns: routerAfterRuns, afterIdle: routerAfterIdle }, runs });
    } finally {
      await cluster.stop();
    }
  }
}
const report = { date: new Date().toISOString(), model: modelDir, results };
const out = values.out ?? join('bench', 'results', `shard-memory-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.error(`wrote ${out}`);
