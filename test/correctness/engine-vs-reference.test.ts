import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint, type MakeCheckpointOptions } from '@expertmesh/checkpoint-maker';
import { Engine, GREEDY } from '@expertmesh/engine';
import { loadReferenceModel, referenceGreedy } from '../reference/index.js';
import { relativeError } from '../helpers/numerics.js';
import { loadEngineWith, loadLocalEngine } from '../helpers/engine.js';
import { loadLocalExperts, type LocalRoutedExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * The engine (float32 on onnxruntime, absorbed MLA, latent cache, batched) against the plain
 * float64 reference, on tiny checkpoints of every storage kind the loader reads.
 */
const variants: { name: string; options: Omit<MakeCheckpointOptions, 'outDir' | 'preset'> }[] = [
  { name: 'float32', options: { dtype: 'float32', seed: 1 } },
  { name: 'bfloat16', options: { dtype: 'bfloat16', seed: 2 } },
  { name: 'fp8 128x128 blocks', options: { dtype: 'bfloat16', fp8: true, seed: 3 } },
  { name: 'fp8 partial 32x24 blocks, sharded in 3', options: { dtype: 'bfloat16', fp8: true, fp8BlockSize: [32, 24], shards: 3, seed: 4 } },
  { name: 'sharded bfloat16', options: { dtype: 'bfloat16', shards: 4, seed: 5 } },
  { name: 'q_lora_rank null', options: { dtype: 'float32', seed: 6, overrides: { q_lora_rank: null } } },
  { name: 'no YaRN', options: { dtype: 'float32', seed: 7, overrides: { rope_scaling: null } } },
];

/** Deterministic prompts; the last is longer than tiny's original_max_position_embeddings (32). */
function prompts(vocab: number): number[][] {
  const lengths = [1, 5, 12, 40];
  let s = 12345;
  const next = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % vocab;
  return lengths.map((n) => Array.from({ length: n }, next));
}

const MAX_TOKENS = 5;

/** The prompts batched: the reference's greedy tokens, and its logits within 1e-4 relative. */
async function expectReferenceGreedy(engine: Engine, reference: ReturnType<typeof loadReferenceModel>): Promise<void> {
  const ps = prompts(engine.config.vocabSize);
  const results = await engine.generate(ps.map((p) => ({ promptTokenIds: p, maxTokens: MAX_TOKENS, sampling: GREEDY, ignoreEos: true, captureLogits: true })));
  ps.forEach((p, i) => {
    const ref = referenceGreedy(reference, p, MAX_TOKENS);
    expect(results[i]!.tokenIds).toEqual(ref.tokenIds);
    results[i]!.logits.forEach((l, step) => expect(relativeError(l, ref.logits[step]!)).toBeLessThan(1e-4));
  });
}

for (const variant of variants) {
  describe(`engine matches the float64 reference: ${variant.name}`, () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let engine: Engine;
    let reference: ReturnType<typeof loadReferenceModel>;

    beforeAll(async () => {
      dir = await tempDir('correctness');
      await makeCheckpoint({ preset: 'tiny', outDir: dir.path, ...variant.options });
      engine = await loadLocalEngine(dir.path, { kvCacheTokens: 1024 });
      reference = loadReferenceModel(dir.path);
    });
    afterAll(async () => {
      await engine?.close();
      await dir?.remove();
    });

    it('gives the same greedy tokens and logits within 1e-4 relative, batched', () => expectReferenceGreedy(engine, reference));
  });
}

/**
 * Routed experts held in float32 (--weight-dtype float32) on either kernel: onnxruntime's MatMul graphs, or the
 * native grouped kernel (its float32 path: 16 FMA lanes and a fixed tree, not onnxruntime's order), both within the
 * reference's bound, from a float32 and an FP8 checkpoint.
 */
for (const variant of variants.filter((v) => v.name === 'float32' || v.name === 'fp8 128x128 blocks')) {
  for (const expertKernel of ['onnxruntime', 'native'] as const) {
    describe(`engine matches the float64 reference: ${variant.name}, float32 experts and LM head on ${expertKernel}`, () => {
      let dir: Awaited<ReturnType<typeof tempDir>>;
      let engine: Engine;
      let experts: LocalRoutedExperts;
      let reference: ReturnType<typeof loadReferenceModel>;

      beforeAll(async () => {
        dir = await tempDir('correctness-experts');
        await makeCheckpoint({ preset: 'tiny', outDir: dir.path, ...variant.options });
        experts = await loadLocalExperts(dir.path, await loadModelConfig(dir.path), { ...DEFAULT_EXECUTION, expertKernel }, 'float32');
        // The dense weights held as float32 too, and the same kernel setting: the LM head runs on that kernel.
        engine = await loadEngineWith(dir.path, experts, { kvCacheTokens: 1024, weightDtype: 'float32', execution: { ...DEFAULT_EXECUTION, expertKernel } });
        reference = loadReferenceModel(dir.path);
      });
      afterAll(async () => {
        await engine?.close();
        await dir?.remove();
      });

      it('gives the same greedy tokens and logits within 1e-4 relative, batched', async () => {
        expect(experts.expertKernel).toBe(expertKernel);
        expect(engine.model.lmHeadKernel).toBe(expertKernel);
        expect(experts.weightFormat).toBe('float32');
        await expectReferenceGreedy(engine, reference);
      });
    });
  }
}

describe('batching and chunking do not change results', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('batching');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, dtype: 'bfloat16', seed: 9 });
  });
  afterAll(async () => dir?.remove());

  const run = async (options: { maxBatchedTokens: number; together: boolean }, ps: number[][]) => {
    const engine = await loadLocalEngine(dir.path, { kvCacheTokens: 8192, maxBatchedTokens: options.maxBatchedTokens });
    try {
      const req = (p: number[]) => ({ promptTokenIds: p, maxTokens: 6, sampling: GREEDY, ignoreEos: true, captureLogits: true });
      if (options.together) return await engine.generate(ps.map(req));
      const out = [];
      for (const p of ps) out.push(...(await engine.generate([req(p)])));
      return out;
    } finally {
      await engine.close();
    }
  };

  it('prefill at once equals token-by-token decode of the prompt', async () => {
    const ps = prompts(512).slice(1);
    const atOnce = await run({ maxBatchedTokens: 512, together: false }, ps);
    const tokenByToken = await run({ maxBatchedTokens: 1, together: false }, ps);
    atOnce.forEach((r, i) => {
      expect(tokenByToken[i]!.tokenIds).toEqual(r.tokenIds);
      r.logits.forEach((l, s) => expect(relativeError(tokenByToken[i]!.logits[s]!, l)).toBeLessThan(1e-5));
    });
  });

  it('one 2400-token step of many prompts at once equals each prompt alone', async () => {
    // Regression: large steps once lost expert outputs to a parallel scatter-add.
    let s = 3;
    const ps = Array.from({ length: 60 }, () => Array.from({ length: 40 }, () => (s = (s * 31 + 17) % 512)));
    const alone = await run({ maxBatchedTokens: 1024, together: false }, ps);
    const batched = await run({ maxBatchedTokens: 4096, together: true }, ps);
    alone.forEach((r, i) => {
      expect(batched[i]!.tokenIds).toEqual(r.tokenIds);
      r.logits.forEach((l, step) => expect(relativeError(batched[i]!.logits[step]!, l)).toBeLessThan(1e-5));
    });
  });

  it('a batch of 8 sequences of different lengths equals each run alone', async () => {
    let s = 7;
    const ps = Array.from({ length: 8 }, (_, i) => Array.from({ length: 1 + 3 * i }, () => (s = (s * 31 + 17) % 512)));
    const alone = await run({ maxBatchedTokens: 512, together: false }, ps);
    const batched = await run({ maxBatchedTokens: 64, together: true }, ps);
    alone.forEach((r, i) => {
      expect(batched[i]!.tokenIds).toEqual(r.tokenIds);
      r.logits.forEach((l, step) => expect(relativeError(batched[i]!.logits[step]!, l)).toBeLessThan(1e-5));
    });
  });
});
