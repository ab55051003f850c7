import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { QUANTIZED_FORMATS, uniformWeightFormats, type WeightFormats, type WeightPart } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { DeepseekV3Model, LatentKvCache, type HeldFormats } from '../src/index.js';

const INT8 = `int8+block${QUANTIZED_FORMATS.int8.block}`;
const PROMPT = [3, 14, 15, 92, 65, 35];

/**
 * Per-part weight formats (--attention-weight-dtype and the like, resolved into one WeightFormats): each part of
 * the model holds its matrices in its own format, read back from the weights the model built its graphs from,
 * and a lossy part changes the logits while the float32 ones stay as they are.
 */
describe('per-part weight formats', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let float32Logits: readonly Float32Array[];

  const load = async (formats: WeightFormats): Promise<{ model: DeepseekV3Model; expertFormat: string }> => {
    const experts = await loadLocalExperts(dir.path, config, DEFAULT_EXECUTION, formats.experts);
    return { model: await DeepseekV3Model.load(dir.path, { experts, weightDtype: formats }), expertFormat: experts.weightFormat };
  };

  /** The logits at every position of PROMPT, in one forward pass. */
  const logits = async (model: DeepseekV3Model): Promise<readonly Float32Array[]> => {
    const cache = LatentKvCache.forModel(config, PROMPT.length);
    const blocks = Array.from({ length: cache.numBlocks }, (_, i) => i);
    const result = await model.forward(PROMPT.map((t, p) => ({ tokenIds: [t], startPosition: p, length: 1, blocks, wantLogits: true })), cache);
    return result.logits.map((l) => l.slice());
  };

  const largestDifference = (a: readonly Float32Array[], b: readonly Float32Array[]): number => Math.max(...a.map((row, r) => Math.max(...row.map((v, i) => Math.abs(v - b[r]![i]!)))));

  beforeAll(async () => {
    dir = await tempDir('weight-formats');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, dtype: 'bfloat16', seed: 13 });
    config = await loadModelConfig(dir.path);
    const { model } = await load(uniformWeightFormats('float32'));
    try {
      float32Logits = await logits(model);
    } finally {
      await model.close();
    }
  });
  afterAll(async () => dir?.remove());

  const allFloat32: HeldFormats = { attention: ['float32'], dense: ['float32'], gates: ['float32'], lmHead: ['float32'], embedding: ['float32'] };

  it.each([
    // kv_b is held float32 under a quantised attention (split by head, not only multiplied).
    ['attention', { ...allFloat32, attention: [INT8, 'float32'] }, 'float32'],
    ['dense', { ...allFloat32, dense: [INT8] }, 'float32'],
    ['lmHead', { ...allFloat32, lmHead: [INT8] }, 'float32'],
    ['experts', allFloat32, INT8],
  ] as const)('int8 %s, float32 everywhere else: int8 exactly there, and logits that differ from the all-float32 model\'s', async (part: WeightPart, held: HeldFormats, expertFormat: string) => {
    const { model, expertFormat: heldExperts } = await load({ ...uniformWeightFormats('float32'), [part]: 'int8' });
    try {
      expect(model.heldFormats).toEqual(held);
      expect(heldExperts).toBe(expertFormat);
      // Lossy in compute too, not only in what is reported: more than float32 rounding apart, and still the same model.
      const difference = largestDifference(await logits(model), float32Logits);
      expect(difference).toBeGreaterThan(1e-4);
      expect(difference).toBeLessThan(1);
    } finally {
      await model.close();
    }
  });

  it('all int8 but float32 attention, dense MLPs and LM head: the model\'s own parts compute as the all-float32 model\'s, bit for bit, when its experts are float32 too', async () => {
    // The routed experts' entry is the experts backend's business: given float32 experts, this model is the float32 one.
    const formats: WeightFormats = { attention: 'float32', dense: 'float32', experts: 'int8', lmHead: 'float32', other: 'int8' };
    const experts = await loadLocalExperts(dir.path, config, DEFAULT_EXECUTION, 'float32');
    const model = await DeepseekV3Model.load(dir.path, { experts, weightDtype: formats });
    try {
      // `other` int8: the gates float32 (they decide routing), the embedding table as the checkpoint stores it.
      expect(model.heldFormats).toEqual({ ...allFloat32, embedding: ['bfloat16'] });
      expect(largestDifference(await logits(model), float32Logits)).toBe(0);
    } finally {
      await model.close();
    }
  });

  it('one format for every part, as --weight-dtype alone gives: int8 in every product, the gates float32, the embedding table as stored', async () => {
    const { model, expertFormat } = await load(uniformWeightFormats('int8'));
    try {
      expect(model.heldFormats).toEqual({ attention: [INT8, 'float32'], dense: [INT8], gates: ['float32'], lmHead: [INT8], embedding: ['bfloat16'] });
      expect(expertFormat).toBe(INT8);
    } finally {
      await model.close();
    }
  });
});
