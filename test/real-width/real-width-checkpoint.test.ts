import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Engine, GREEDY } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { LocalCluster } from '@expertmesh/local-cluster';
import { layoutFromCheckpoint, predictExpertBytes, predictRouterMemory, readCheckpointIdentity } from '@expertmesh/model-weights';
import { openExperts } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { relativeError } from '../helpers/numerics.js';
import { offThread } from '../helpers/off-thread.js';
import { tempDir } from '../helpers/temp-dir.js';
import type { EngineRun } from './real-width-engine-job.js';

/**
 * A checkpoint at every width of DeepSeek-R1 (hidden 7168, 128 heads, q/kv LoRA 1536/512, dense MLP
 * 18432, experts of 2048), FP8 with 128×128 block scales and BF16 where the real one has them, cut to
 * what CI can write quickly: 2 layers (1 dense, 1 MoE), 8 experts (4 per token from 2 of 4 groups) and
 * a 4096-token vocabulary. About 1.2 GB on disk. The in-process engines load and run on a worker thread
 * (real-width-engine-job.ts): a real-width layer's load holds its thread for ~30 s in one piece.
 */
const overrides = { vocab_size: 4096, n_routed_experts: 8, n_group: 4, topk_group: 2, num_experts_per_tok: 4 };
const MiB = 2 ** 20;
const prompt = [17, 423, 9, 3071, 88, 1024, 5, 2047];

describe('a real-width FP8 checkpoint (2 layers, 8 experts)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('real-width');
    await makeCheckpoint({ preset: 'r1-slice', outDir: dir.path, seed: 11, overrides });
  }, 600_000);
  afterAll(async () => dir?.remove());

  it('held as FP8 gives the greedy tokens and logits of the float32 widening (within 1e-5)', async () => {
    const run = (weightDtype: 'auto' | 'float32'): Promise<EngineRun> => offThread(new URL('./real-width-engine-job.ts', import.meta.url), 'greedyRun', { modelDir: dir.path, weightDtype, prompt });
    const held = await run('auto');
    const widened = await run('float32');
    expect(held.tokenIds).toHaveLength(3);
    expect(held.tokenIds).toEqual(widened.tokenIds);
    expect(held.logits).toHaveLength(3);
    held.logits.forEach((l, i) => expect(relativeError(l, widened.logits[i]!)).toBeLessThan(1e-5));
    // FP8 is a quarter of float32, plus its scales; the BF16 embeddings and LM head a half.
    expect(held.weightBytes).toBeLessThan(0.3 * widened.weightBytes);
  }, 600_000);

  it("plan's prediction matches what router and shard processes report holding (within 10 %), RSS beside it", async () => {
    const checkpoint = await SafetensorsCheckpoint.open(dir.path);
    const identity = await readCheckpointIdentity(dir.path);
    const config = identity.config;
    const layout = layoutFromCheckpoint(config, checkpoint);
    await checkpoint.close();
    const kvCacheTokens = 4096;
    const router = predictRouterMemory(config, layout, 'auto', kvCacheTokens);
    const perShard = 4 * predictExpertBytes(config, layout, 'auto');

    const cluster = await LocalCluster.start({ modelDir: dir.path, shards: 2, nRoutedExperts: config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1'] });
    let engine: Engine;
    try {
      const experts = await openExperts({ kind: 'shards', addresses: cluster.addresses }, { ...identity, modelDir: dir.path }, DEFAULT_EXECUTION, { wireDtype: 'float32', combineDtype: 'float32' });
      engine = await Engine.load(dir.path, { experts, kvCacheTokens });
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    try {
      // Enough tokens that every expert runs, so every weight has been read once.
      await engine.generate(Array.from({ length: 8 }, (_, i) => ({ promptTokenIds: prompt.map((t) => (t * (i + 3)) % 4096), maxTokens: 2, sampling: GREEDY, ignoreEos: true })));
      const holders = await engine.model.experts.holders(10_000);
      expect(engine.model.experts).not.toBeInstanceOf(LocalRoutedExperts);
      const rows = [
        { process: 'router', predicted: router.weights, reported: engine.model.denseWeightBytes, rss: process.memoryUsage().rss },
        ...holders.map((h) => ({ process: h.shardId, predicted: perShard, reported: h.weightBytes, rss: h.residentBytes })),
      ];
      console.log(
        ['| process | predicted weights MiB | reported weights MiB | resident MiB |', '|---|---|---|---|', ...rows.map((r) => `| ${r.process} | ${(r.predicted / MiB).toFixed(1)} | ${(r.reported / MiB).toFixed(1)} | ${(r.rss / MiB).toFixed(1)} |`)].join('\n'),
      );
      expect(holders).toHaveLength(2);
      for (const r of rows) expect(Math.abs(r.reported - r.predicted) / r.predicted).toBeLessThan(0.1);
      expect(engine.kvCacheBytes).toBe(router.kvCache);
      for (const h of holders) expect(h.weightFormat).toBe('float8e4m3fn+block128x128');
    } finally {
      await engine.close();
      await cluster.stop();
    }
  }, 600_000);
});
