import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY, type GenerationRequest, type GenerationResult } from '@expertmesh/engine';
import { relativeError } from '../helpers/numerics.js';
import { startDistributed } from '../helpers/cluster.js';
import { loadLocalEngine } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * Two micro-batches in flight against real shard processes: the same tokens and logprobs as one
 * batch in this process, with prefill chunks and decode tokens sharing steps, and both micro-batches'
 * calls to the shards out at the same time.
 */
let seed = 7;
const prompts = [2, 19, 1, 8, 33, 5, 11, 3].map((n) => Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 512));
const requests: GenerationRequest[] = prompts.map((p, i) => ({ promptTokenIds: p, maxTokens: 5 + (i % 2), sampling: GREEDY, ignoreEos: true, topLogprobs: 2, captureLogits: true }));

describe('ping-pong micro-batches with shards', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let local: GenerationResult[];
  beforeAll(async () => {
    dir = await tempDir('micro-batches-cluster');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, dtype: 'bfloat16', seed: 23 });
    const engine = await loadLocalEngine(dir.path, { kvCacheTokens: 2048, maxBatchedTokens: 24, microBatches: 1 });
    local = await engine.generate(requests);
    await engine.close();
  });
  afterAll(async () => dir?.remove());

  it('2 shards, 2 micro-batches, float32 wire: tokens and logprobs of one in-process batch; two calls per shard and layer in flight at once', async () => {
    const d = await startDistributed(dir.path, 2, { wireDtype: 'float32', combineDtype: 'float32' }, { maxBatchedTokens: 24, microBatches: 2 });
    // Layers whose shard calls are out, counted around the backend the model calls.
    let out = 0;
    let mostOut = 0;
    const compute = d.experts.compute.bind(d.experts);
    d.experts.compute = async (layer, hidden, routing) => {
      mostOut = Math.max(mostOut, ++out);
      try {
        return await compute(layer, hidden, routing);
      } finally {
        out--;
      }
    };
    try {
      const remote = await d.engine.generate(requests);
      remote.forEach((r, i) => {
        expect(r.tokenIds).toEqual(local[i]!.tokenIds);
        r.logprobs.forEach((lp, s) => expect(Math.abs(lp.logprob - local[i]!.logprobs[s]!.logprob)).toBeLessThan(1e-4));
        r.logits.forEach((l, s) => expect(relativeError(l, local[i]!.logits[s]!)).toBeLessThan(1e-5));
      });
      expect(mostOut).toBe(2);
    } finally {
      await d.stop();
    }
  });
});
