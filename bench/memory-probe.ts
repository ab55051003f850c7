/**
 * One process of the resident-memory breakdown (bench/resident-memory.ts starts it once per variant):
 * the process baseline, then the in-process engine loaded in one format, then the bench runs
 * (prefill + decode at batch 1, 8 and 32, as `bench:engine`), measuring resident memory by kind of
 * mapping at each point (and once more after a few seconds idle), printed as `probe <phase> <json>` on stdout.
 * With --trim, each point is followed by one malloc_trim(0) (returnFreedHeap) and a point "<phase>-trimmed".
 *   node --import tsx bench/memory-probe.ts --model DIR --weight-dtype int8 [--expert-kernel native] [--trim]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { WEIGHT_DTYPES, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { mallocHeapStats, returnFreedHeap } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, EXPERT_KERNELS, releaseLoadBuffers, type ExpertKernel } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { residentByKind } from './resident-by-kind.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, 'weight-dtype': { type: 'string', default: 'int8' }, batches: { type: 'string', default: '1,8,32' }, 'idle-ms': { type: 'string', default: '3000' }, 'expert-kernel': { type: 'string', default: 'onnxruntime' }, trim: { type: 'boolean', default: false } } });
const expertKernel = values['expert-kernel'] as ExpertKernel;
if (!EXPERT_KERNELS.includes(expertKernel)) throw new Error(`--expert-kernel must be one of ${EXPERT_KERNELS.join(', ')}`);
const weightDtype = values['weight-dtype'] as WeightDtype;
if (!WEIGHT_DTYPES.includes(weightDtype)) throw new Error(`--weight-dtype must be one of ${WEIGHT_DTYPES.join(', ')}`);
if (!values.model) throw new Error('--model DIR is required');
const batches = values.batches.split(',').map(Number);

async function point(phase: string, extra: Record<string, unknown> = {}): Promise<void> {
  await releaseLoadBuffers();
  const usage = process.memoryUsage();
  // Which allocator this process really runs (a preload that failed leaves glibc's).
  const maps = readFileSync('/proc/self/maps', 'utf8');
  const allocator = /libjemalloc/.test(maps) ? 'jemalloc' : /libtcmalloc/.test(maps) ? 'tcmalloc' : 'glibc';
  const threads = Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
  console.log(`probe ${phase} ${JSON.stringify({ rss: usage.rss, v8Heap: usage.heapTotal, arrayBuffers: usage.arrayBuffers, threads, allocator, byKind: residentByKind(), malloc: mallocHeapStats(), ...extra })}`);
  if (values.trim && !phase.endsWith('-trimmed')) {
    const trim = returnFreedHeap();
    await point(`${phase}-trimmed`, { ...extra, trim });
  }
}

await point('baseline-imports');
const config = await loadModelConfig(values.model);
const checkpoint = await SafetensorsCheckpoint.open(values.model);
const local = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, weightDtype), { ...DEFAULT_EXECUTION, expertKernel });
await checkpoint.close();
const maxBatch = Math.max(...batches);
const engine = await Engine.load(values.model, { experts: local, weightDtype, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
const held = { weightBytes: engine.model.denseWeightBytes + local.weightBytes, kvCacheBytes: engine.kvCacheBytes };
await point('after-load', held);
const runs = [];
for (const batch of batches) runs.push(await runDecode(engine, batch, batch));
await point('after-runs', { ...held, runs });
// An allocator that returns freed memory on a timer (jemalloc's background thread) gets a moment idle.
await new Promise((r) => setTimeout(r, Number(values['idle-ms'])));
await point('after-idle', { ...held, runs, idleMs: Number(values['idle-ms']) });
await engine.close();
