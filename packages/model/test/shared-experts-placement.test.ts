import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { DeepseekV3Model, LatentKvCache, type ForwardSegment, type SharedExpertsPlacement } from '../src/index.js';

/**
 * The shared expert in the layer's own run (in-process experts) or beside the routed experts (shards)
 * is a placement, not a different model: a prefill and a batched decode give the same bits either way.
 */
describe('where the shared expert runs', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const models = new Map<SharedExpertsPlacement, DeepseekV3Model>();
  beforeAll(async () => {
    dir = await tempDir('shared-experts');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 23 });
    const config = await loadModelConfig(dir.path);
    for (const placement of ['in-layer', 'beside-routed'] as const) {
      const experts = await loadLocalExperts(dir.path, config, DEFAULT_EXECUTION);
      models.set(placement, await DeepseekV3Model.load(dir.path, { experts, sharedExperts: placement }));
    }
  });
  afterAll(async () => {
    for (const m of models.values()) await m.close();
    await dir?.remove();
  });

  const run = async (model: DeepseekV3Model): Promise<Float32Array[]> => {
    const cache = LatentKvCache.forModel(model.config, 64);
    const a: ForwardSegment = { tokenIds: [5, 17, 300, 42, 9], startPosition: 0, length: 5, blocks: [0], wantLogits: true };
    const b: ForwardSegment = { tokenIds: [77, 8], startPosition: 0, length: 2, blocks: [2], wantLogits: true };
    const prefill = (await model.forward([a, b], cache)).logits.map((l) => l.slice());
    const decode = await model.forward([{ ...a, tokenIds: [1], startPosition: 5, length: 1 }, { ...b, tokenIds: [2], startPosition: 2, length: 1 }], cache);
    return [...prefill, ...decode.logits.map((l) => l.slice())];
  };

  it('gives the same logits, bit for bit, in the layer run and beside the routed experts', async () => {
    const inLayer = await run(models.get('in-layer')!);
    const beside = await run(models.get('beside-routed')!);
    expect(inLayer).toHaveLength(4);
    inLayer.forEach((l, i) => expect(l).toEqual(beside[i]));
  });
});
