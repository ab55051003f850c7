import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { loadEngineWith, loadLocalEngine } from '../../../test/helpers/engine.js';
import { InterceptedExperts } from '../../../test/helpers/intercepted-experts.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { GREEDY, splitMicroBatches, type GenerationRequest, type GenerationResult } from '../src/index.js';

describe('splitMicroBatches', () => {
  const seg = (...lengths: number[]) => lengths.map((length) => ({ length }));

  it('balances tokens with whole segments, keeps plan order in each part, never makes an empty part', () => {
    expect(splitMicroBatches(seg(1, 1, 1, 1), 2)).toEqual([
      [0, 2],
      [1, 3],
    ]);
    // A prefill chunk on one side, the decode tokens on the other.
    expect(splitMicroBatches(seg(1, 1, 6, 1, 1), 2)).toEqual([[2], [0, 1, 3, 4]]);
    expect(splitMicroBatches(seg(5, 3, 3), 2)).toEqual([[0], [1, 2]]);
    expect(splitMicroBatches(seg(7), 2)).toEqual([[0]]);
    expect(splitMicroBatches(seg(1, 1, 1), 1)).toEqual([[0, 1, 2]]);
    expect(splitMicroBatches([], 2)).toEqual([]);
  });

  it('every segment lands in exactly one part', () => {
    const lengths = [1, 9, 1, 1, 4, 1, 2, 1, 1, 16, 1];
    const parts = splitMicroBatches(seg(...lengths), 2);
    expect(parts.flat().sort((a, b) => a - b)).toEqual(lengths.map((_, i) => i));
    const tokens = parts.map((p) => p.reduce((a, i) => a + lengths[i]!, 0));
    expect(Math.abs(tokens[0]! - tokens[1]!)).toBeLessThanOrEqual(Math.max(...lengths));
  });
});

/**
 * Two micro-batches in flight: the step's sequences split in two pipelines through the layers. The
 * results equal one batch's (the same rows meet the same weights; only the products' batching
 * differs), and while one micro-batch's experts are away the other's attention runs.
 */
describe('ping-pong micro-batches, experts in this process', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('micro-batches');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 31 });
  });
  afterAll(async () => dir?.remove());

  let seed = 5;
  const prompts = [3, 17, 1, 9, 30, 4, 12].map((n) => Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 512));
  // Prompts of different lengths under a small token budget: prefill chunks share steps with decode tokens.
  const requests: GenerationRequest[] = prompts.map((p, i) => ({ promptTokenIds: p, maxTokens: 6 + (i % 3), sampling: GREEDY, ignoreEos: true, topLogprobs: 3, captureLogits: true }));
  const run = async (microBatches: 1 | 2): Promise<GenerationResult[]> => {
    const engine = await loadLocalEngine(dir.path, { kvCacheTokens: 1024, maxBatchedTokens: 24, microBatches });
    try {
      return await engine.generate(requests);
    } finally {
      await engine.close();
    }
  };

  it('2 micro-batches give the tokens and logprobs of 1 (prefill chunks and decode tokens mixed)', async () => {
    const one = await run(1);
    const two = await run(2);
    two.forEach((r, i) => {
      const ref = one[i]!;
      expect(r.tokenIds).toEqual(ref.tokenIds);
      expect(r.finishReason).toBe(ref.finishReason);
      r.logprobs.forEach((lp, s) => {
        expect(Math.abs(lp.logprob - ref.logprobs[s]!.logprob)).toBeLessThan(1e-4);
        expect(lp.top.map(([t]) => t)).toEqual(ref.logprobs[s]!.top.map(([t]) => t));
      });
      r.logits.forEach((l, s) => {
        let worst = 0;
        for (let v = 0; v < l.length; v++) worst = Math.max(worst, Math.abs(l[v]! - ref.logits[s]![v]!));
        expect(worst).toBeLessThan(1e-4);
      });
    });
  });

  const concurrency = async (microBatches: 1 | 2): Promise<{ maxInFlight: number; calls: number; tokensPerCall: number[] }> => {
    let inFlight = 0;
    let maxInFlight = 0;
    const tokensPerCall: number[] = [];
    // Each layer's experts answer only after the event loop has had turns: as shards would, later.
    const experts = new InterceptedExperts(await loadLocalExperts(dir.path, await loadModelConfig(dir.path), DEFAULT_EXECUTION), async () => {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
      inFlight--;
    });
    const observed = experts.observe({ onRouting: (_l, r) => tokensPerCall.push(r.numTokens) });
    const engine = await loadEngineWith(dir.path, experts, { kvCacheTokens: 1024, maxBatchedTokens: 64, microBatches });
    try {
      const decoding = requests.slice(0, 4).map((r) => ({ ...r, promptTokenIds: r.promptTokenIds.slice(0, 2), maxTokens: 3 }));
      for (const r of decoding) engine.submit(r);
      await engine.step(); // the four prompts
      tokensPerCall.length = 0;
      experts.calls = 0;
      maxInFlight = 0;
      await engine.step(); // four decode tokens
      return { maxInFlight, calls: experts.calls, tokensPerCall: [...tokensPerCall] };
    } finally {
      observed();
      await engine.close();
    }
  };

  it('with 2, both micro-batches have experts out at once and each layer is called per micro-batch; with 1, one call per layer', async () => {
    const one = await concurrency(1);
    expect(one.maxInFlight).toBe(1);
    expect(one.tokensPerCall).toEqual([4, 4]); // the tiny model's 2 MoE layers
    const two = await concurrency(2);
    expect(two.maxInFlight).toBe(2);
    expect(two.tokensPerCall).toEqual([2, 2, 2, 2]);
  });

  it('refuses a micro-batch count other than 1 or 2', async () => {
    await expect(loadLocalEngine(dir.path, { kvCacheTokens: 64, microBatches: 3 as 2 })).rejects.toThrow(/micro-batches must be 1 or 2/);
  });
});
