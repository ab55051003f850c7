import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalEngine } from '../../../test/helpers/engine.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { GREEDY, type Engine, type GenerationRequest, type GenerationResult } from '../src/index.js';

/** KV blocks on demand: a cache too small for all sequences at once preempts and recomputes, and loses nothing. */
describe('preemption by recompute', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let engine: Engine;
  beforeAll(async () => {
    dir = await tempDir('preemption');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 2 });
    // 256 cache tokens = 16 blocks; four requests of up to 80 tokens need 20 at once.
    engine = await loadLocalEngine(dir.path, { kvCacheTokens: 256, prefixCaching: false });
  });
  afterAll(async () => {
    await engine?.close();
    await dir?.remove();
  });

  const request = (first: number): GenerationRequest => ({ promptTokenIds: Array.from({ length: 20 }, (_, i) => (first + i * 13) % 500), maxTokens: 60, sampling: GREEDY, ignoreEos: true, topLogprobs: 3 });

  it('greedy tokens and log-probabilities are those of each request run alone', async () => {
    const alone: GenerationResult[] = [];
    for (const first of [1, 2, 3, 4]) alone.push((await engine.generate([request(first)]))[0]!);
    const before = engine.preemptions;
    const together = await engine.generate([1, 2, 3, 4].map(request));
    expect(engine.preemptions).toBeGreaterThan(before);
    expect(together.map((r) => r.tokenIds)).toEqual(alone.map((r) => r.tokenIds));
    together.forEach((r, i) => {
      expect(r.tokenIds).toHaveLength(60);
      r.logprobs.forEach((lp, t) => expect(Math.abs(lp.logprob - alone[i]!.logprobs[t]!.logprob)).toBeLessThan(1e-4));
    });
    expect(engine.kvCacheUsage).toBe(0);
  });
});
