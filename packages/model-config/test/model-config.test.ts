import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  attentionSoftmaxScale,
  getPreset,
  ModelConfigError,
  parseModelConfig,
  PRESET_NAMES,
  rotaryParameters,
} from '../src/index.js';

const fixture = join(import.meta.dirname, '../../../test/fixtures/deepseek-r1-config.json');
const r1Json = (): Record<string, unknown> => JSON.parse(readFileSync(fixture, 'utf8')) as Record<string, unknown>;

describe('the real DeepSeek-R1 config.json', () => {
  const config = parseModelConfig(r1Json());

  it('parses every key that shapes the computation', () => {
    expect(config).toMatchObject({
      hiddenSize: 7168,
      vocabSize: 129280,
      numLayers: 61,
      numNextnPredictLayers: 1,
      numHeads: 128,
      qLoraRank: 1536,
      kvLoraRank: 512,
      qkNopeHeadDim: 128,
      qkRopeHeadDim: 64,
      qkHeadDim: 192,
      vHeadDim: 128,
      intermediateSize: 18432,
      moeIntermediateSize: 2048,
      nRoutedExperts: 256,
      nSharedExperts: 1,
      numExpertsPerTok: 8,
      nGroup: 8,
      topkGroup: 4,
      normTopkProb: true,
      routedScalingFactor: 2.5,
      firstKDenseReplace: 3,
      moeLayerFreq: 1,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositionEmbeddings: 163840,
      bosTokenId: 0,
      eosTokenIds: [1],
      quantization: { format: 'e4m3', weightBlockSize: [128, 128] },
      ropeScaling: { factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 1 },
    });
  });

  it('has 58 MoE layers after 3 dense ones', () => {
    expect(config.moeLayers.length).toBe(58);
    expect(config.moeLayers[0]).toBe(3);
    expect(config.moeLayers.at(-1)).toBe(60);
  });

  it('scales the softmax by YaRN mscale squared', () => {
    const m = 0.1 * 1 * Math.log(40) + 1;
    expect(attentionSoftmaxScale(config)).toBeCloseTo((m * m) / Math.sqrt(192), 12);
  });

  it('interpolates low rotary frequencies by the YaRN factor and keeps high ones', () => {
    const { invFreq, cosSinScale } = rotaryParameters(config);
    expect(invFreq.length).toBe(32);
    expect(cosSinScale).toBe(1);
    // Highest frequency (pair 0) is extrapolated (kept); the lowest is divided by the factor.
    expect(invFreq[0]).toBe(1);
    expect(invFreq[31]).toBeCloseTo(1 / Math.pow(10000, 62 / 64) / 40, 15);
    // In between the ramp blends monotonically.
    for (let i = 1; i < 32; i++) expect(invFreq[i]!).toBeLessThan(invFreq[i - 1]!);
  });
});

describe('invalid configs', () => {
  const expectError = (mutate: (j: Record<string, unknown>) => void, pattern: RegExp): void => {
    const json = r1Json();
    mutate(json);
    let caught: unknown;
    try {
      parseModelConfig(json, 'my/config.json');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ModelConfigError);
    expect((caught as Error).message).toMatch(/my\/config\.json/);
    expect((caught as Error).message).toMatch(pattern);
  };

  it('names a missing key', () => expectError((j) => delete j.kv_lora_rank, /kv_lora_rank/));
  it('rejects a scoring function it does not implement', () => expectError((j) => (j.scoring_func = 'softmax'), /scoring_func/));
  it('rejects a topk method it does not implement', () => expectError((j) => (j.topk_method = 'greedy'), /topk_method/));
  it('rejects experts not divisible into groups', () => expectError((j) => (j.n_routed_experts = 250), /multiple of n_group/));
  it('rejects topk_group above n_group', () => expectError((j) => (j.topk_group = 9), /topk_group/));
  it('rejects an unknown rope scaling type', () =>
    expectError((j) => (j.rope_scaling = { type: 'dynamic', factor: 2 }), /rope_scaling/));
  it('rejects a quantization format it cannot read', () =>
    expectError((j) => ((j.quantization_config as Record<string, unknown>).fmt = 'e5m2'), /quantization_config\.fmt/));
  it('rejects an odd rotary dimension', () => expectError((j) => (j.qk_rope_head_dim = 63), /qk_rope_head_dim/));
});

describe('presets', () => {
  for (const name of PRESET_NAMES) {
    it(`${name} is a valid DeepSeek-V3 config`, () => {
      const config = parseModelConfig(getPreset(name).config);
      expect(config.moeLayers.length).toBeGreaterThan(0);
      // r1-slice leaves the multi-token-prediction layer out (12 GB the engine does not use).
      expect(config.numNextnPredictLayers).toBe(name === 'r1-slice' ? 0 : 1);
    });
  }

  it('r1-slice has every width of the real DeepSeek-R1 config, in 2 layers (1 dense, 1 MoE), FP8 by default', () => {
    const real = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'deepseek-r1-config.json'), 'utf8')) as Record<string, unknown>;
    const preset = getPreset('r1-slice');
    const same = ['hidden_size', 'intermediate_size', 'moe_intermediate_size', 'num_attention_heads', 'num_key_value_heads', 'q_lora_rank', 'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim', 'n_routed_experts', 'n_shared_experts', 'num_experts_per_tok', 'n_group', 'topk_group', 'vocab_size', 'rope_scaling', 'rope_theta', 'routed_scaling_factor', 'max_position_embeddings', 'rms_norm_eps'];
    for (const key of same) expect([key, preset.config[key]]).toEqual([key, real[key]]);
    const config = parseModelConfig(preset.config);
    expect([config.numLayers, config.moeLayers]).toEqual([2, [1]]);
    expect(preset.fp8ByDefault).toBe(true);
    expect(preset.realTokenizer).toBe(true);
  });

  it('demo routes like the real model: >= 64 experts, 8 chosen, 8 groups choosing 4, real vocabulary', () => {
    const demo = parseModelConfig(getPreset('demo').config);
    expect(demo.nRoutedExperts).toBeGreaterThanOrEqual(64);
    expect([demo.numExpertsPerTok, demo.nGroup, demo.topkGroup]).toEqual([8, 8, 4]);
    expect(demo.vocabSize).toBe(129280);
  });

  it('rejects an unknown preset name', () => expect(() => getPreset('huge')).toThrow(/tiny, demo, bench/));
});

describe('q_lora_rank null and no YaRN', () => {
  it('parses and uses plain rotary frequencies', () => {
    const json = { ...getPreset('tiny').config, q_lora_rank: null, rope_scaling: null };
    const config = parseModelConfig(json);
    expect(config.qLoraRank).toBeNull();
    expect(config.ropeScaling).toBeNull();
    expect(attentionSoftmaxScale(config)).toBeCloseTo(1 / Math.sqrt(24), 15);
    expect(rotaryParameters(config).invFreq[1]).toBeCloseTo(1 / Math.pow(10000, 2 / 8), 15);
  });
});
