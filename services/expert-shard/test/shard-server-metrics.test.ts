import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { ShardMetrics } from '@expertmesh/telemetry';
import { CHANNEL_OPTIONS, encodePairs, encodeTensor, expertmeshV1, type RunExpertsResponse__Output } from '@expertmesh/wire';
import { loadShardCompute, parseExpertSpec, ShardServer, type ShardCompute } from '../src/index.js';
import { loadExperts } from '../src/load-shard.js';
import { TINY_SHARD_LOAD, tinyCheckpoint } from './tiny-shard.js';

type Unary = (req: unknown, cb: (e: grpc.ServiceError | null, r?: RunExpertsResponse__Output) => void) => void;

function call(client: grpc.Client, compute: ShardCompute, layer: number, experts: number[]): Promise<RunExpertsResponse__Output> {
  const H = compute.config.hiddenSize;
  const hidden = Float32Array.from({ length: 2 * H }, (_, i) => Math.cos(i * 0.21) * 0.5);
  const pairs = encodePairs({ tokenRows: Int32Array.from(experts, (_, i) => i % 2), expertIds: Int32Array.from(experts), weights: Float32Array.from(experts, () => 0.25) });
  const run = (client as unknown as { RunExperts: Unary }).RunExperts.bind(client);
  return new Promise((resolve, reject) =>
    run({ modelFingerprint: compute.fingerprint, layer, hidden: encodeTensor(hidden, 2, H, 'bfloat16'), ...pairs, outputDtype: 'TENSOR_DTYPE_BFLOAT16', traceContext: {} }, (e, r) => (e ? reject(e) : resolve(r!))),
  );
}

async function metric(metrics: ShardMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  // A histogram's values are its buckets, sum and count (metricName says which): take the count.
  const value = found?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l) && (!name.endsWith('_seconds') || (v as { metricName?: string }).metricName === `${name}_count`));
  return value?.value ?? 0;
}

/**
 * The shard records its metrics after an answer is handed to gRPC (off the call's path): every
 * answered call is still counted, and the weight gauge follows a plan switch without being set on
 * every request.
 */
describe('shard server metrics, recorded after the answer', () => {
  const checkpoint = tinyCheckpoint('shard-metrics', 5);

  it('counts every answered call and its compute, and the weight gauge follows a plan switch', async () => {
    const compute = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const metrics = new ShardMetrics();
    const server = new ShardServer(compute, 'metrics-test', metrics);
    const address = await server.listen('127.0.0.1', 0);
    const client = new (expertmeshV1().ExpertShardService)(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      const layer = compute.config.moeLayers[0]!;
      const before = compute.experts.weightBytes;
      for (let i = 0; i < 5; i++) expect((await call(client, compute, layer, [0, 3, 7])).output!.shape).toEqual([2, compute.config.hiddenSize]);
      await expect(call(client, compute, layer, [12])).rejects.toThrow(/expert 12 of layer \d+ is not held/);
      // Recorded in the turn after each answer: wait for that turn, never for a fixed time.
      await new Promise((r) => setImmediate(r));
      expect(await metric(metrics, 'expertmesh_shard_requests_total', { outcome: 'ok' })).toBe(5);
      expect(await metric(metrics, 'expertmesh_shard_requests_total', { outcome: 'refused' })).toBe(1);
      expect(await metric(metrics, 'expertmesh_shard_compute_seconds')).toBe(5);
      expect(await metric(metrics, 'expertmesh_shard_weight_bytes', { format: compute.experts.weightFormat })).toBe(before);

      compute.beginSwitch(await loadExperts(checkpoint.dir, compute, parseExpertSpec('0-15'), TINY_SHARD_LOAD));
      expect(compute.experts.weightBytes).toBe(2 * before);
      await call(client, compute, layer, [12]);
      await new Promise((r) => setImmediate(r));
      expect(await metric(metrics, 'expertmesh_shard_weight_bytes', { format: compute.experts.weightFormat })).toBe(2 * before);
      expect(await metric(metrics, 'expertmesh_shard_requests_total', { outcome: 'ok' })).toBe(6);
    } finally {
      client.close();
      await server.shutdown(2000);
    }
  });

  it('returns freed heap pages to the kernel once idle after calls, once per idle spell (malloc_trim)', async () => {
    const compute = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const server = new ShardServer(compute, 'heap-test', new ShardMetrics(), { idleHeapReturnMs: 20 });
    const address = await server.listen('127.0.0.1', 0);
    const client = new (expertmeshV1().ExpertShardService)(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    /** Until the idle return owed for the calls so far is done (however many idle spells a busy machine made of them). */
    const settled = async (): Promise<void> => {
      for (const end = Date.now() + 10_000; server.heapReturn.owed && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
      expect(server.heapReturn.owed).toBe(false);
    };
    try {
      const layer = compute.config.moeLayers[0]!;
      expect(server.heapReturn.returns).toBe(0);
      // Three calls in flight together: one busy spell (a busy machine may still part them, hence `spells`).
      await Promise.all([0, 1, 2].map(() => call(client, compute, layer, [0, 3, 7])));
      await settled();
      const spells = server.heapReturn.returns;
      expect(spells).toBeGreaterThanOrEqual(1);
      expect(spells).toBeLessThanOrEqual(3);
      expect(server.heapReturn.last?.glibc).toBe(true);
      expect(server.heapReturn.last?.v8?.done).toBe(true); // V8's young generation shrunk too
      expect(server.heapReturn.last!.microseconds).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 100)); // idle, no calls: no second trim
      expect(server.heapReturn.returns).toBe(spells);
      await call(client, compute, layer, [1]);
      await settled();
      expect(server.heapReturn.returns).toBe(spells + 1);
    } finally {
      client.close();
      await server.shutdown(2000);
    }
  });

  it('knows which layers it holds experts of, during a switch too', async () => {
    const compute = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const moe = compute.config.moeLayers[0]!;
    const dense = compute.config.moeLayers[0]! - 1; // the first layers are dense (first_k_dense_replace)
    expect(compute.holdsLayer(moe)).toBe(true);
    expect(compute.holdsLayer(dense)).toBe(false);
    compute.beginSwitch(await loadExperts(checkpoint.dir, compute, parseExpertSpec('8-15'), TINY_SHARD_LOAD));
    expect(compute.holdsLayer(moe)).toBe(true);
    await compute.experts.close();
  });
});
