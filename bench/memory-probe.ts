/**
 * One process of the resident-memory breakdown (bench/resident-memory.ts starts it once per variant):
 * the process baseline, then the in-process engine loaded in one format, then the bench runs
 * (prefill + decode at batch 1, 8 and 32, as `bench:engine`), measuring resident memory by kind of
 * mapping at each point (and once more after a few seconds idle), printed as `probe <phase> <json>` on stdout.
 * With --trim, each point is followed by what an idle server does (returnIdleMemory: V8's heap shrunk, then
 * malloc_trim(0)) and a point "<phase>-trimmed". Each point also reports the peak resident memory and the event loop's
 * longest block since the previous one (the load's transient copies; a load that holds the thread).
 *   node --import tsx bench/memory-probe.ts --model DIR --weight-dtype int8 [--expert-kernel native] [--trim]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { WEIGHT_DTYPES, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { mallocHeapStats, returnIdleMemory } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, EXPERT_KERNELS, releaseLoadBuffers, type ExpertKernel } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { residentByKind, residentDetail } from './resident-by-kind.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, 'weight-dtype': { type: 'string', default: 'int8' }, batches: { type: 'string', default: '1,8,32' }, 'idle-ms': { type: 'string', default: '3000' }, 'expert-kernel': { type: 'string', default: 'onnxruntime' }, trim: { type: 'boolean', default: false } } });
const expertKernel = values['expert-kernel'] as ExpertKernel;
if (!EXPERT_KERNELS.includes(expertKernel)) throw new Error(`--expert-kernel must be one of ${EXPERT_KERNELS.join(', ')}`);
const weightDtype = values['weight-dtype'] as WeightDtype;
if (!WEIGHT_DTYPES.includes(weightDtype)) throw new Error(`--weight-dtype must be one of ${WEIGHT_DTYPES.join(', ')}`);
if (!values.model) throw new Error('--model DIR is required');
const batches = values.batches.split(',').map(Number);

/** V8's heap by space: bytes reserved (resident once touched) and in use. */
function v8Spaces(): Record<string, { size: number; used: number }> {
  return Object.fromEntries(getHeapSpaceStatistics().filter((s) => s.space_size > 0).map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
}

/**
 * The process's peak resident memory since the previous point (VmHWM), then reset (`clear_refs` 5, Linux ≥ 4.0), so each
 * point reports the peak of the phase it ends: a load's transient copies show here, not in its resident memory after.
 */
function peakSinceLastPoint(): number {
  const peak = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;
  writeFileSync('/proc/self/clear_refs', '5');
  return peak;
}

/** The event loop's delays (10 ms resolution): the longest since the previous point is how long the process could not answer a socket or a timer. */
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

async function point(phase: string, extra: Record<string, unknown> = {}): Promise<void> {
  const peakRss = peakSinceLastPoint();
  const longestLoopBlockMs = loopDelay.max / 1e6;
  loopDelay.reset();
  await releaseLoadBuffers();
  const usage = process.memoryUsage();
  // Which allocator this process really runs (a preload that failed leaves glibc's).
  const maps = readFileSync('/proc/self/maps', 'utf8');
  const allocator = /libjemalloc/.test(maps) ? 'jemalloc' : /libtcmalloc/.test(maps) ? 'tcmalloc' : 'glibc';
  const threads = Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
  console.log(`probe ${phase} ${JSON.stringify({ rss: usage.rss, peakRss, longestLoopBlockMs, v8Heap: usage.heapTotal, arrayBuffers: usage.arrayBuffers, threads, allocator, byKind: residentByKind(), detail: residentDetail(), v8Spaces: v8Spaces(), malloc: mallocHeapStats(), ...extra })}`);
  if (values.trim && !phase.endsWith('-trimmed')) {
    const trim = returnIdleMemory();
    await point(`${phase}-trimmed`, { ...extra, trim });
  }
}

await point('baseline-imports');
const config = await loadModelConfig(values.model);
const checkpoint = await SafetensorsCheckpoint.open(values.model);
const loadStart = performance.now();
const local = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, weightDtype), { ...DEFAULT_EXECUTION, expertKernel });
const expertsLoaded = performance.now();
await checkpoint.close();
// The routed experts alone (their load's peak apart from the rest of the model's).
await point('after-experts', { weightBytes: local.weightBytes });
const maxBatch = Math.max(...batches);
const engine = await Engine.load(values.model, { experts: local, weightDtype, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
// Wall time of the load: the routed experts, then the rest of the model (dense layers, attention, LM head).
const loadMs = { experts: expertsLoaded - loadStart, engine: performance.now() - expertsLoaded };
const held = { weightBytes: engine.model.denseWeightBytes + local.weightBytes, kvCacheBytes: engine.kvCacheBytes, loadMs };
await point('after-load', held);
const runs = [];
for (const batch of batches) runs.push(await runDecode(engine, batch, batch));
await point('after-runs', { ...held, runs });
// An allocator that returns freed memory on a timer (jemalloc's background thread) gets a moment idle.
await new Promise((r) => setTimeout(r, Number(values['idle-ms'])));
await point('after-idle', { ...held, runs, idleMs: Number(values['idle-ms']) });
await engine.close();
