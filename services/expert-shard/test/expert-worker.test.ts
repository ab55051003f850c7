import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { encodePairs, encodeTensor, type RunExpertsRequest__Output, type Tensor__Output } from '@expertmesh/wire';
import { loadShardCompute, parseExpertSpec, ShardCompute } from '../src/index.js';
import { loadExperts } from '../src/load-shard.js';
import { ExpertLoadError, ExpertWorkerCrashedError, WorkerExperts } from '../src/worker-experts.js';

const execution = { executionProvider: 'cpu' as const, intraOpThreads: 1 };
const inline = { execution, weightDtype: 'auto' as const };
const inWorkers = { ...inline, inWorkers: true, loadNice: 19 };

/** A call naming (token, expert) pairs of one layer; hidden states sent in `dtype`, sums answered in float32. */
function request(compute: ShardCompute, layer: number, rows: number, experts: number[], dtype: 'float32' | 'bfloat16' = 'float32'): RunExpertsRequest__Output {
  const H = compute.config.hiddenSize;
  const hidden = Float32Array.from({ length: rows * H }, (_, i) => Math.sin(i * 0.37) * 0.5);
  const tokenRows = Int32Array.from(experts.map((_, i) => i % rows));
  const pairs = encodePairs({ tokenRows, expertIds: Int32Array.from(experts), weights: Float32Array.from(experts.map((_, i) => 0.1 + i * 0.05)) });
  return { requestId: '1', modelFingerprint: compute.fingerprint, layer, hidden: { rowScales: Buffer.alloc(0), ...encodeTensor(hidden, rows, H, dtype) } as Tensor__Output, ...pairs, outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} } as unknown as RunExpertsRequest__Output;
}

async function sums(compute: ShardCompute, req: RunExpertsRequest__Output): Promise<Buffer> {
  return Buffer.from((await compute.run(req, performance.now())).response.output!.data as Buffer);
}

/** A test gate (WorkerLoad.gate): resolves once the load has stopped at it, i.e. its thread is blocked. */
async function blockedAt(gate: Int32Array): Promise<void> {
  while (Atomics.load(gate, 0) !== 1) await new Promise((resolve) => setTimeout(resolve, 5));
}

/**
 * A shard's experts held and run by worker threads (--expert-worker on): a new plan's set is built in
 * a worker of its own while the current set answers, the answers are those of experts run on the
 * serving thread bit for bit, a dead worker fails its calls with a typed error, and no worker thread
 * outlives the shard's close.
 */
describe('experts in worker threads', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'expertmesh-worker-'));
    await makeCheckpoint({ preset: 'tiny', outDir: dir, seed: 4 });
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  // Both expert kernels: onnxruntime graphs on the checkpoint's format, and the native kernel on int8 codes and on
  // float32 values (its addon loaded in each worker thread as in the serving thread, its threads ended with each set).
  const kernels = [
    { kernel: 'onnxruntime', weightDtype: 'auto' },
    { kernel: 'native', weightDtype: 'int8' },
    { kernel: 'native', weightDtype: 'float32' },
  ] as const;
  it.each(kernels)('answers what experts on the serving thread answer, bit for bit, before, during and after a switch ($kernel experts, $weightDtype)', async ({ kernel, weightDtype }) => {
    const options = { execution: { ...execution, expertKernel: kernel }, weightDtype };
    const threaded = await loadShardCompute(dir, parseExpertSpec('0-7'), { ...inWorkers, ...options });
    const onThread = await loadShardCompute(dir, parseExpertSpec('0-7'), { ...inline, ...options });
    try {
      expect(threaded.experts).toBeInstanceOf(WorkerExperts);
      expect(threaded.experts.weightBytes).toBe(onThread.experts.weightBytes);
      expect(threaded.experts.weightFormat).toBe(onThread.experts.weightFormat);
      expect(threaded.experts.weightFormat).toMatch(weightDtype === 'int8' ? /^int8\+block/ : /^bfloat16|^float32|^float8/);
      expect(threaded.servingLayers()).toEqual(onThread.servingLayers());
      const layers = threaded.config.moeLayers;
      for (const layer of layers) {
        for (const dtype of ['float32', 'bfloat16'] as const) {
          expect(await sums(threaded, request(threaded, layer, 3, [0, 5, 7, 2, 5], dtype))).toEqual(await sums(onThread, request(onThread, layer, 3, [0, 5, 7, 2, 5], dtype)));
        }
      }
      const before = threaded.experts as WorkerExperts;
      threaded.beginSwitch(await loadExperts(dir, threaded, parseExpertSpec('6-15'), { ...inWorkers, ...options }));
      onThread.beginSwitch(await loadExperts(dir, onThread, parseExpertSpec('6-15'), { ...inline, ...options }));
      expect(threaded.experts).not.toBe(before);
      expect(threaded.servingLayers()).toEqual(onThread.servingLayers());
      const mixed = [0, 9, 7, 12, 3, 6, 15, 1];
      for (const layer of layers) expect(await sums(threaded, request(threaded, layer, 3, mixed))).toEqual(await sums(onThread, request(onThread, layer, 3, mixed)));
      threaded.retire(0);
      onThread.retire(0);
      await before.exited; // the retired set's thread ends with it
      expect(threaded.holds(layers[0]!, 0)).toBe(false);
      for (const layer of layers) expect(await sums(threaded, request(threaded, layer, 2, [6, 9, 15]))).toEqual(await sums(onThread, request(onThread, layer, 2, [6, 9, 15])));
    } finally {
      await threaded.close();
      await onThread.close();
    }
  });

  it('answers calls while a new set is being loaded, its loading thread blocked', async () => {
    const compute = await loadShardCompute(dir, parseExpertSpec('0-7'), inWorkers);
    const layer = compute.config.moeLayers[0]!;
    const gate = new Int32Array(new SharedArrayBuffer(4));
    let loaded = false;
    const next = WorkerExperts.start({ modelDir: dir, execution, weightDtype: 'auto', layers: compute.config.moeLayers.map((l) => ({ layer: l, experts: [8, 9, 10, 11, 12, 13, 14, 15] })), restFactor: 0, loadNice: 19, gate: gate.buffer as SharedArrayBuffer });
    void next.then(() => (loaded = true));
    try {
      await blockedAt(gate);
      // The loading thread is blocked (as by a long graph build): the serving set still answers, again and again.
      for (let i = 0; i < 5; i++) expect((await compute.run(request(compute, layer, 2, [1, 4, 7]), performance.now())).stats.pairs).toBe(3);
      expect(loaded).toBe(false);
      Atomics.store(gate, 0, 2);
      Atomics.notify(gate, 0);
      compute.beginSwitch(await next);
      expect(compute.servingLayers().find((l) => l.layer === layer)!.experts).toEqual(Array.from({ length: 16 }, (_, i) => i));
      expect((await compute.run(request(compute, layer, 2, [1, 12]), performance.now())).stats.pairs).toBe(2);
    } finally {
      Atomics.store(gate, 0, 2);
      Atomics.notify(gate, 0);
      await next.catch(() => undefined);
      await compute.close();
    }
  });

  it('fails the calls of a dead worker with a typed error and tells the shard, instead of hanging', async () => {
    const compute = await loadShardCompute(dir, parseExpertSpec('0-3'), inWorkers);
    const layer = compute.config.moeLayers[0]!;
    const crashes: ExpertWorkerCrashedError[] = [];
    compute.onWorkerCrash((e) => crashes.push(e));
    const set = compute.experts as WorkerExperts;
    // A call in flight when the thread dies settles: answered if the thread got to it first, else refused with the typed error.
    const inFlight = compute.run(request(compute, layer, 2, [1, 2]), performance.now()).then(
      () => 'answered',
      (e: unknown) => (e instanceof ExpertWorkerCrashedError ? 'refused' : e),
    );
    await set.worker!.terminate(); // from outside: to the set, the thread just died
    expect(['answered', 'refused']).toContain(await inFlight);
    await expect(compute.run(request(compute, layer, 2, [1]), performance.now())).rejects.toMatchObject({ name: 'ExpertWorkerCrashedError', code: 14 });
    expect(crashes).toHaveLength(1);
    await compute.close();
  });

  it('refuses a load that fails in its worker with a typed error, and ends that thread', async () => {
    const failing = WorkerExperts.start({ modelDir: join(dir, 'missing'), execution, weightDtype: 'auto', layers: [{ layer: 1, experts: [0] }], restFactor: 0, loadNice: 0 });
    await expect(failing).rejects.toBeInstanceOf(ExpertLoadError);
  });

  it('ends every worker thread when the shard closes, the one being handed over included', async () => {
    const compute = await loadShardCompute(dir, parseExpertSpec('0-3'), inWorkers);
    const first = compute.experts as WorkerExperts;
    compute.beginSwitch(await loadExperts(dir, compute, parseExpertSpec('2-5'), inWorkers, 0));
    const second = compute.experts as WorkerExperts;
    expect(second).not.toBe(first);
    compute.retire(60_000); // still serving the old set when the shard closes
    await compute.close();
    await Promise.all([first.exited, second.exited]);
    expect(first.worker!.threadId).toBe(-1); // a thread that has exited has no id
    expect(second.worker!.threadId).toBe(-1);
  });
});
