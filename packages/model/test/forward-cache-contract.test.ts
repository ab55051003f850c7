import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { InterceptedExperts } from '../../../test/helpers/intercepted-experts.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { DeepseekV3Model, LatentKvCache, type ForwardSegment } from '../src/index.js';

/**
 * What a forward pass may touch in the cache, which is what makes a failed step safe to run again:
 * it writes the rows of exactly its segments' positions and reads nothing else but rows below each
 * segment's end. So whatever a failed pass left at positions nobody counts as computed (a half-done
 * write, a write that is not idempotent) is rewritten before anything reads it.
 */
describe('the forward pass and the latent cache', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let model: DeepseekV3Model;
  let failAtLayer: number | null = null;
  beforeAll(async () => {
    dir = await tempDir('forward-cache');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 21 });
    const inner = await loadLocalExperts(dir.path, await loadModelConfig(dir.path), DEFAULT_EXECUTION);
    const experts = new InterceptedExperts(inner, (_call, layer) => {
      if (layer === failAtLayer) throw new Error(`injected failure at MoE layer ${layer}`);
    });
    model = await DeepseekV3Model.load(dir.path, { experts });
  });
  afterAll(async () => {
    await model?.close();
    await dir?.remove();
  });

  // Two blocks of 16, out of order in the pool; the prompt is 6 tokens, the next decode is position 6.
  const blocks = [2, 0];
  const prompt = [11, 250, 3, 97, 400, 42];
  const prefill: ForwardSegment = { tokenIds: prompt, startPosition: 0, length: prompt.length, blocks, wantLogits: true };
  const decode: ForwardSegment = { tokenIds: [77], startPosition: prompt.length, length: 1, blocks, wantLogits: true };
  const newCache = (fill = 0): LatentKvCache => {
    const cache = LatentKvCache.forModel(model.config, 64);
    for (const pool of cache.pools) pool.fill(fill);
    return cache;
  };
  const row = (cache: LatentKvCache, layer: number, position: number): Float32Array => {
    const slot = cache.slotOf(blocks, position);
    return cache.pools[layer]!.subarray(slot * cache.rowSize, (slot + 1) * cache.rowSize);
  };

  it('writes exactly the planned positions and reads no row at or past a segment end', async () => {
    const clean = newCache();
    const expected = (await model.forward([prefill], clean)).logits[0]!.slice();
    // Every row NaN beforehand: one read of a row the pass did not write first would poison the logits.
    const poisoned = newCache(Number.NaN);
    const got = (await model.forward([prefill], poisoned)).logits[0]!.slice();
    expect(got).toEqual(expected);
    for (let layer = 0; layer < model.config.numLayers; layer++) {
      for (let p = 0; p < prompt.length; p++) expect(row(poisoned, layer, p)).toEqual(row(clean, layer, p));
      // Everything else still as it was: the rest of both blocks, and the blocks the segment does not own.
      const written = new Set(Array.from({ length: prompt.length }, (_, p) => poisoned.slotOf(blocks, p)));
      const pool = poisoned.pools[layer]!;
      let untouched = 0;
      for (let slot = 0; slot < poisoned.numBlocks * poisoned.blockSize; slot++) {
        if (written.has(slot)) continue;
        expect(Number.isNaN(pool[slot * poisoned.rowSize]!)).toBe(true);
        untouched++;
      }
      expect(untouched).toBe(poisoned.capacityTokens - prompt.length);
    }
  });

  it('a decode step that fails part-way, run again over what it left (any garbage), gives the undisturbed logits', async () => {
    const clean = newCache();
    await model.forward([prefill], clean);
    const expected = (await model.forward([decode], clean)).logits[0]!.slice();

    const cache = newCache();
    await model.forward([prefill], cache);
    const prefixRows = Array.from({ length: model.config.numLayers }, (_, l) => cache.pools[l]!.slice());
    failAtLayer = model.config.moeLayers.at(-1)!;
    try {
      await expect(model.forward([decode], cache)).rejects.toThrow(/injected failure/);
    } finally {
      failAtLayer = null;
    }
    // The failed pass got as far as the last MoE layer: the decode row of the first layers is written.
    expect(row(cache, 0, decode.startPosition).some((v) => v !== 0)).toBe(true);
    // The prompt's rows are as the prefill left them.
    for (let l = 0; l < model.config.numLayers; l++) {
      for (let p = 0; p < prompt.length; p++) {
        const slot = cache.slotOf(blocks, p);
        expect(cache.pools[l]!.subarray(slot * cache.rowSize, (slot + 1) * cache.rowSize)).toEqual(prefixRows[l]!.subarray(slot * cache.rowSize, (slot + 1) * cache.rowSize));
      }
    }
    // Whatever a write that is not idempotent would leave: the decode position's rows in every layer made garbage.
    for (let l = 0; l < model.config.numLayers; l++) row(cache, l, decode.startPosition).fill(1e30);
    const retried = (await model.forward([decode], cache)).logits[0]!.slice();
    expect(retried).toEqual(expected);
  });
});
