import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint, readLinearWeight } from '@expertmesh/weights';
import { makeCheckpoint, planTensors } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

describe('tensor plan', () => {
  it('names every tensor of the real DeepSeek-R1 checkpoint layout, including the MTP layer', async () => {
    const r1 = parseModelConfig(JSON.parse(await readFile(join(import.meta.dirname, '../../../test/fixtures/deepseek-r1-config.json'), 'utf8')));
    const plan = planTensors(r1);
    const names = new Set(plan.map((t) => t.name));
    // Spot checks against the real model.safetensors.index.json of deepseek-ai/DeepSeek-R1.
    for (const n of [
      'model.embed_tokens.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.2.mlp.down_proj.weight',
      'model.layers.3.mlp.gate.e_score_correction_bias',
      'model.layers.3.mlp.experts.255.up_proj.weight',
      'model.layers.60.mlp.shared_experts.down_proj.weight',
      'model.layers.60.self_attn.kv_a_proj_with_mqa.weight',
      'model.layers.61.eh_proj.weight',
      'model.layers.61.shared_head.head.weight',
      'lm_head.weight',
    ]) {
      expect(names).toContain(n);
    }
    expect(names).not.toContain('model.layers.3.mlp.gate_proj.weight');
    const kvB = plan.find((t) => t.name === 'model.layers.0.self_attn.kv_b_proj.weight')!;
    expect(kvB.shape).toEqual([128 * (128 + 128), 512]);
    // 671B parameters in all (MTP layer included), as DeepSeek reports.
    const params = plan.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    expect(params / 1e9).toBeCloseTo(684.5, 0);
  });
});

describe('makeCheckpoint', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('maker');
  });
  afterAll(async () => dir?.remove());

  it('is deterministic in the seed and independent of sharding', async () => {
    const a = join(dir.path, 'a');
    const b = join(dir.path, 'b');
    const c = join(dir.path, 'c');
    await makeCheckpoint({ preset: 'tiny', outDir: a, seed: 5, dtype: 'float32' });
    await makeCheckpoint({ preset: 'tiny', outDir: b, seed: 5, dtype: 'float32', shards: 3 });
    await makeCheckpoint({ preset: 'tiny', outDir: c, seed: 6, dtype: 'float32' });
    const [ca, cb, cc] = await Promise.all([a, b, c].map((d) => SafetensorsCheckpoint.open(d)));
    const name = 'model.layers.1.mlp.experts.3.down_proj.weight';
    expect(await cb!.readFloat32(name)).toEqual(await ca!.readFloat32(name));
    expect(await cc!.readFloat32(name)).not.toEqual(await ca!.readFloat32(name));
    const index = JSON.parse(await readFile(join(b, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']));
    expect(Object.keys(index.weight_map).sort()).toEqual(ca!.names().sort());
    await Promise.all([ca, cb, cc].map((x) => x!.close()));
  });

  it('writes FP8 projections with block scales and keeps norms, router and embeddings in the checkpoint dtype', async () => {
    const out = join(dir.path, 'fp8');
    await makeCheckpoint({ preset: 'tiny', outDir: out, seed: 1, fp8: true, fp8BlockSize: [32, 24] });
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.quantization_config).toEqual({ activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [32, 24] });
    const ck = await SafetensorsCheckpoint.open(out);
    const q = ck.info('model.layers.0.self_attn.q_a_proj.weight'); // [48, 64]
    expect(q.dtype).toBe('F8_E4M3');
    expect(ck.info('model.layers.0.self_attn.q_a_proj.weight_scale_inv').shape).toEqual([2, 3]);
    expect(ck.info('model.layers.1.mlp.gate.weight').dtype).toBe('BF16');
    expect(ck.info('model.layers.1.mlp.gate.e_score_correction_bias').dtype).toBe('F32');
    expect(ck.info('model.embed_tokens.weight').dtype).toBe('BF16');
    expect(ck.info('lm_head.weight').dtype).toBe('BF16');
    // Dequantised FP8 stays close to the values a float32 checkpoint of the same seed holds.
    const f32Dir = join(dir.path, 'f32');
    await makeCheckpoint({ preset: 'tiny', outDir: f32Dir, seed: 1, dtype: 'float32' });
    const exact = await SafetensorsCheckpoint.open(f32Dir);
    const w = await readLinearWeight(ck, 'model.layers.0.self_attn.q_a_proj.weight', [32, 24]);
    const ref = await exact.readFloat32('model.layers.0.self_attn.q_a_proj.weight');
    const maxAbs = Math.max(...ref.map(Math.abs));
    for (let i = 0; i < ref.length; i++) expect(Math.abs(w[i]! - ref[i]!)).toBeLessThanOrEqual(maxAbs / 16);
    await ck.close();
    await exact.close();
  });

  it('ships the real DeepSeek-V3 tokenizer files with the demo preset only', async () => {
    const plan = planTensors(parseModelConfig(getPreset('demo').config));
    expect(plan.length).toBeGreaterThan(0);
    const tiny = join(dir.path, 'tiny-tok');
    const summary = await makeCheckpoint({ preset: 'tiny', outDir: tiny });
    expect(summary.tokenizer).toBe(false);
    expect(summary.files).toEqual(['model.safetensors']);
  });
});
