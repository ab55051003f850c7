import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY } from '@expertmesh/engine';
import type { DispatchCall, ExpertRouting } from '@expertmesh/routed-experts';
import { startDistributed } from '../helpers/cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * Counts what crosses the wire: per MoE layer and step, one call per shard that has work, carrying
 * the hidden states of exactly the tokens routed there, each token once per shard.
 */
describe('dispatch calls and bytes', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('accounting');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 8 });
  });
  afterAll(async () => dir?.remove());

  it('sends each token once to each shard holding any of its experts, one call per shard with work', async () => {
    const d = await startDistributed(dir.path, 2, { wireDtype: 'bfloat16', combineDtype: 'bfloat16' });
    const H = d.engine.config.hiddenSize;
    const shardOf = (expert: number): number => (expert < 8 ? 0 : 1); // even split of 16 experts over 2 shards
    const observed: { layer: number; routing: ExpertRouting; calls: DispatchCall[] }[] = [];
    let current: DispatchCall[] | null = null;
    d.experts.observe({ onCall: (c) => current?.push(c) });
    const compute = d.experts.compute.bind(d.experts);
    d.experts.compute = async (layer, hidden, routing) => {
      const calls: DispatchCall[] = [];
      current = calls;
      const out = await compute(layer, hidden, routing);
      current = null;
      observed.push({ layer, routing, calls });
      return out;
    };
    try {
      await d.engine.generate([3, 9, 1].map((n, i) => ({ promptTokenIds: Array.from({ length: n }, (_, j) => (i * 50 + j * 7) % 512), maxTokens: 4, sampling: GREEDY, ignoreEos: true })));
      // 2 MoE layers × (1 prefill step + 3 decode steps), whatever the batching.
      expect(observed.length).toBeGreaterThanOrEqual(8);
      for (const { layer, routing, calls } of observed) {
        const expected = [0, 1].map((s) => {
          const tokens = new Set<number>();
          let pairs = 0;
          for (let i = 0; i < routing.expertIds.length; i++) {
            if (shardOf(routing.expertIds[i]!) === s) {
              tokens.add(Math.floor(i / routing.topK));
              pairs++;
            }
          }
          return { tokens: tokens.size, pairs };
        });
        const withWork = expected.filter((e) => e.tokens > 0);
        expect(calls).toHaveLength(withWork.length);
        // Calls report as they complete; put them in shard order.
        calls.sort((a, b) => d.cluster.addresses.indexOf(a.shard) - d.cluster.addresses.indexOf(b.shard));
        calls.forEach((c, i) => {
          expect(c.layer).toBe(layer);
          expect(c.tokens).toBe(withWork[i]!.tokens);
          expect(c.pairs).toBe(withWork[i]!.pairs);
          expect(c.hiddenBytes).toBe(withWork[i]!.tokens * H * 2); // bfloat16, each token once
          expect(c.pairBytes).toBe(withWork[i]!.pairs * 12);
          expect(c.responseBytes).toBe(withWork[i]!.tokens * H * 2);
        });
        // Every token went somewhere, and no shard saw a token twice.
        expect(calls.reduce((a, c) => a + c.pairs, 0)).toBe(routing.numTokens * routing.topK);
      }
    } finally {
      await d.stop();
    }
  });
});
