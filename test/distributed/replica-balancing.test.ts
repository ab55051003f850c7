import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall } from '@expertmesh/routed-experts';
import { connectToShards } from '@expertmesh/router';
import { loadEngineWith, loadLocalEngine } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp-dir.js';

/** With every expert on two shards, each token goes to one shard, and the batch is spread over both. */
describe('load balancing across replicas', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('replicas');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 13 });
  });
  afterAll(async () => dir?.remove());

  it('prefers the fewest distinct shards per token and spreads tokens over replicas', async () => {
    // Two shards that each hold every expert: "--experts all" on both.
    const cluster = await LocalCluster.start({ modelDir: dir.path, shards: 1, nRoutedExperts: 16, shardArgs: ['--intra-op-threads', '1'] });
    const cluster2 = await LocalCluster.start({ modelDir: dir.path, shards: 1, nRoutedExperts: 16, shardArgs: ['--intra-op-threads', '1'] });
    const calls: DispatchCall[] = [];
    try {
      const remote = await connectToShards([...cluster.addresses, ...cluster2.addresses], await readCheckpointIdentity(dir.path), { wireDtype: 'float32', combineDtype: 'float32' });
      remote.observe({ onCall: (c) => calls.push(c) });
      const engine = await loadEngineWith(dir.path, remote, { kvCacheTokens: 2048 });
      const local = await loadLocalEngine(dir.path, { kvCacheTokens: 2048 });
      const requests = Array.from({ length: 8 }, (_, i) => ({ promptTokenIds: [i + 1, i + 2, i + 3], maxTokens: 4, sampling: GREEDY, ignoreEos: true }));
      const [remoteOut, localOut] = [await engine.generate(requests), await local.generate(requests)];
      await engine.close();
      await local.close();
      expect(remoteOut.map((r) => r.tokenIds)).toEqual(localOut.map((r) => r.tokenIds));
      // Each token's k=4 experts all went to one shard: pairs = 4 × tokens on every call.
      for (const c of calls) expect(c.pairs).toBe(4 * c.tokens);
      // Both replicas got work, and close to half of it each (as placed: a hedge of a late call, which a busy
      // machine can cause, sends rows to the other replica too, so it is not counted).
      const byShard = new Map<string, number>();
      for (const c of calls) if (!c.hedge) byShard.set(c.shard, (byShard.get(c.shard) ?? 0) + c.tokens);
      const counts = [...byShard.values()];
      expect(counts).toHaveLength(2);
      expect(Math.min(...counts) / Math.max(...counts)).toBeGreaterThan(0.8);
    } finally {
      await cluster.stop();
      await cluster2.stop();
    }
  });
});
