import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { CheckpointError, SafetensorsCheckpoint, writeSafetensors } from '@expertmesh/weights';
import { WeightShapeError } from '@expertmesh/model-weights';
import { loadLocalEngine } from '../../../test/helpers/engine.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/** A broken checkpoint must fail at load with an error naming the file and the tensor. */
describe('loading a bad checkpoint', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let n = 0;
  const fresh = async (options: { shards?: number; fp8?: boolean } = {}): Promise<string> => {
    const out = join(dir.path, `m${n++}`);
    await makeCheckpoint({ preset: 'tiny', outDir: out, seed: 1, ...options });
    return out;
  };
  const loadError = async (modelDir: string): Promise<Error> => {
    try {
      const e = await loadLocalEngine(modelDir, { kvCacheTokens: 64 });
      await e.close();
    } catch (err) {
      return err as Error;
    }
    throw new Error('expected the load to fail');
  };

  beforeAll(async () => {
    dir = await tempDir('bad-checkpoint');
  });
  afterAll(async () => dir?.remove());

  it('a truncated file names the file and the first tensor cut off', async () => {
    const m = await fresh();
    const file = join(m, 'model.safetensors');
    const size = (await open(file, 'r').then(async (h) => ((await h.stat()).size + (await h.close(), 0))));
    await truncate(file, size - 1000);
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toContain('model.safetensors');
    expect(err.message).toMatch(/tensor "[^"]+"/);
    expect(err.message).toMatch(/truncated/);
  });

  it('a corrupt header says so', async () => {
    const m = await fresh();
    const file = join(m, 'model.safetensors');
    const h = await open(file, 'r+');
    await h.write(Buffer.from([0x7b, 0x00, 0xff, 0x22]), 0, 4, 8);
    await h.close();
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/model\.safetensors.*not valid JSON/);
  });

  it('a missing shard file is named with a tensor it should hold', async () => {
    const m = await fresh({ shards: 2 });
    await rm(join(m, 'model-00002-of-00002.safetensors'));
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/model-00002-of-00002\.safetensors.*missing/);
  });

  it('a tensor the index places in a shard that lacks it is named', async () => {
    const m = await fresh({ shards: 2 });
    const indexPath = join(m, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map: Record<string, string> };
    const name = 'lm_head.weight';
    index.weight_map[name] = 'model-00001-of-00002.safetensors';
    await writeFile(indexPath, JSON.stringify(index));
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/model-00001-of-00002\.safetensors \(tensor "lm_head\.weight"\)/);
  });

  it('a tensor missing from the checkpoint is named', async () => {
    const m = await fresh();
    const file = join(m, 'model.safetensors');
    const ck = await SafetensorsCheckpoint.open(m);
    const dropped = 'model.layers.1.mlp.experts.7.up_proj.weight';
    const keep = await Promise.all(
      ck.names().filter((x) => x !== dropped).map(async (name) => {
        const info = ck.info(name);
        const bytes = await ck.readRaw(name);
        return { name, dtype: info.dtype, shape: info.shape, data: () => bytes };
      }),
    );
    await ck.close();
    await writeSafetensors(file, keep);
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toContain(`tensor "${dropped}"`);
    expect(err.message).toMatch(/not found/);
  });

  it('a shape that contradicts config.json names the tensor, the file and both shapes', async () => {
    const m = await fresh();
    const cfgPath = join(m, 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
    cfg.kv_lora_rank = 40;
    await writeFile(cfgPath, JSON.stringify(cfg));
    const err = await loadError(m);
    expect(err).toBeInstanceOf(WeightShapeError);
    expect(err.message).toMatch(/kv_a_proj_with_mqa\.weight.*model\.safetensors.*\[40, 64\]|kv_a_proj_with_mqa\.weight.*model\.safetensors/);
    expect(err.message).toMatch(/config\.json implies/);
  });

  it('an FP8 weight without its scale tensor names both', async () => {
    const m = await fresh({ fp8: true });
    const cfgPath = join(m, 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
    delete cfg.quantization_config;
    await writeFile(cfgPath, JSON.stringify(cfg));
    const err = await loadError(m);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/is FP8 but config\.json has no quantization_config/);
  });
});
