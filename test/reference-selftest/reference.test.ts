import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyRope,
  decodeBF16,
  decodeF16,
  decodeF8E4M3,
  isMoeLayer,
  loadReferenceModel,
  parseConfig,
  readSafetensorsFile,
  referenceAttention,
  referenceFfn,
  referenceGreedy,
  referenceLogits,
  referenceRoute,
  ropeParameters,
  weightF64,
  type F64Tensor,
  type ReferenceModel,
  type StoredTensor,
} from '../reference/index.js';
import { bf16Bytes, f32Bytes, rng, setValues, tinyConfig, tinyWeights, writeCheckpoint, writeSafetensors, type TinyWeights } from './tiny-checkpoint.js';

/**
 * Self-tests of the float64 reference against facts established independently of it: hand-decoded
 * bytes, hand-computed YaRN frequencies, hand-built routing cases, checkpoints written by this test,
 * and an absorbed-form MLA written differently from the reference's naive form.
 */

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'expertmesh-reference-selftest-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dirCount = 0;
const freshDir = (): string => join(root, `ckpt-${dirCount++}`);

// ---------------------------------------------------------------------------------------------
// Small independent helpers
// ---------------------------------------------------------------------------------------------

const tensor = (w: TinyWeights, name: string): { rows: number; cols: number; v: Float64Array } => {
  const t = w.get(name);
  if (!t) throw new Error(`no ${name}`);
  return { rows: t.shape[0]!, cols: t.shape[1] ?? 1, v: t.values };
};

/** W x with W given as its rows. */
function mv(w: TinyWeights, name: string, x: ArrayLike<number>): number[] {
  const { rows, cols, v } = tensor(w, name);
  return Array.from({ length: rows }, (_, r) => {
    let s = 0;
    for (let c = 0; c < cols; c++) s += v[r * cols + c]! * x[c]!;
    return s;
  });
}

function norm(x: ArrayLike<number>, weight: ArrayLike<number>, eps = 1e-6): number[] {
  const xs = Array.from(x);
  const rms = Math.sqrt(xs.reduce((a, b) => a + b * b, 0) / xs.length + eps);
  return xs.map((v, i) => (v / rms) * weight[i]!);
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

function randomVector(n: number, seed: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => r() * 2 - 1);
}

/** A model whose weight `name` is replaced, without touching disk. */
function withWeight(m: ReferenceModel, name: string, t: F64Tensor): ReferenceModel {
  return { config: m.config, rope: m.rope, weight: (n) => (n === name ? t : m.weight(n)) };
}

function scaled(t: F64Tensor, f: (v: number, i: number) => number): F64Tensor {
  return { shape: t.shape, data: t.data.map(f) };
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

describe('scalar decoding', () => {
  it('float8_e4m3fn bytes worked out by hand', () => {
    expect(decodeF8E4M3(0x38)).toBe(1);
    expect(decodeF8E4M3(0xb8)).toBe(-1);
    expect(decodeF8E4M3(0x3c)).toBe(1.5);
    expect(decodeF8E4M3(0x7e)).toBe(448); // largest finite
    expect(decodeF8E4M3(0xfe)).toBe(-448);
    expect(decodeF8E4M3(0x78)).toBe(256); // exponent 15 is a normal exponent in e4m3fn
    expect(decodeF8E4M3(0x01)).toBe(2 ** -9); // smallest subnormal
    expect(decodeF8E4M3(0x07)).toBe(7 * 2 ** -9); // largest subnormal
    expect(decodeF8E4M3(0x08)).toBe(2 ** -6); // smallest normal
    expect(decodeF8E4M3(0x00)).toBe(0);
    expect(Object.is(decodeF8E4M3(0x80), -0)).toBe(true);
    expect(decodeF8E4M3(0x7f)).toBeNaN();
    expect(decodeF8E4M3(0xff)).toBeNaN();
    // Every other byte is finite.
    for (let b = 0; b < 256; b++) if (b !== 0x7f && b !== 0xff) expect(Number.isFinite(decodeF8E4M3(b))).toBe(true);
  });

  it('bfloat16 and float16 bytes worked out by hand', () => {
    expect(decodeBF16(0x3f80)).toBe(1);
    expect(decodeBF16(0xc000)).toBe(-2);
    expect(decodeBF16(0x4049)).toBe(3.140625);
    expect(decodeBF16(0x0001)).toBe(2 ** -133); // subnormal
    expect(decodeBF16(0x7f80)).toBe(Infinity);
    expect(decodeBF16(0xff80)).toBe(-Infinity);
    expect(decodeBF16(0x7fc0)).toBeNaN();
    expect(decodeF16(0x3c00)).toBe(1);
    expect(decodeF16(0xc000)).toBe(-2);
    expect(decodeF16(0x7bff)).toBe(65504);
    expect(decodeF16(0x0001)).toBe(2 ** -24);
    expect(decodeF16(0x0400)).toBe(2 ** -14);
    expect(decodeF16(0x7c00)).toBe(Infinity);
    expect(decodeF16(0x7e00)).toBeNaN();
  });

  it('reads a hand-written safetensors file of every dtype', () => {
    const path = join(root, 'dtypes.safetensors');
    const u16 = (xs: number[]): Buffer => Buffer.from(new Uint16Array(xs).buffer);
    writeSafetensors(path, [
      { name: 'a.f32', dtype: 'F32', shape: [2, 2], bytes: f32Bytes([1, -2.5, Math.fround(0.1), 3]) },
      { name: 'b.bf16', dtype: 'BF16', shape: [3], bytes: u16([0x3f80, 0xc000, 0x4049]) },
      { name: 'c.f16', dtype: 'F16', shape: [3], bytes: u16([0x3c00, 0x7bff, 0x0001]) },
      { name: 'd.f8', dtype: 'F8_E4M3', shape: [1, 4], bytes: Buffer.from([0x38, 0x7e, 0x01, 0xb8]) },
    ]);
    const t = readSafetensorsFile(path);
    expect([...t.keys()].sort()).toEqual(['a.f32', 'b.bf16', 'c.f16', 'd.f8']); // no __metadata__
    expect(t.get('a.f32')!.shape).toEqual([2, 2]);
    expect([...t.get('a.f32')!.data]).toEqual([1, -2.5, Math.fround(0.1), 3]);
    expect([...t.get('b.bf16')!.data]).toEqual([1, -2, 3.140625]);
    expect([...t.get('c.f16')!.data]).toEqual([1, 65504, 2 ** -24]);
    expect([...t.get('d.f8')!.data]).toEqual([1, 448, 2 ** -9, -1]);
  });

  it('multiplies FP8 weights by their block scales, partial blocks included', () => {
    // A 3×4 weight in [2, 3] blocks: scales [[2, 3], [5, 7]] ([ceil(3/2), ceil(4/3)]).
    const q: StoredTensor = { dtype: 'F8_E4M3', shape: [3, 4], data: Float64Array.from([1, 2, -1, 0.5, 1, 1, 1, 1, 0.25, 1.5, -0.5, 2]) };
    const s: StoredTensor = { dtype: 'F32', shape: [2, 2], data: Float64Array.from([2, 3, 5, 7]) };
    const tensors = new Map([
      ['w.weight', q],
      ['w.weight_scale_inv', s],
    ]);
    const w = weightF64(tensors, 'w.weight', [2, 3]);
    expect(w.shape).toEqual([3, 4]);
    expect([...w.data]).toEqual([2, 4, -2, 1.5, 2, 2, 2, 3, 1.25, 7.5, -2.5, 14]);
    // Wrong scale shape for the block size is an error, not a silent misread.
    expect(() => weightF64(tensors, 'w.weight', [3, 2])).toThrow(/weight_scale_inv/);
    // Non-FP8 weights are returned as they are.
    const f: StoredTensor = { dtype: 'BF16', shape: [2], data: Float64Array.from([1, 2]) };
    expect([...weightF64(new Map([['n.weight', f]]), 'n.weight', [2, 3]).data]).toEqual([1, 2]);
  });
});

// ---------------------------------------------------------------------------------------------
// Checkpoint formats
// ---------------------------------------------------------------------------------------------

describe('one set of weights stored every way reads back identically', () => {
  const config = tinyConfig();
  const weights = tinyWeights(config, 11, [3, 5]);
  const tokens = [3, 14, 1, 5, 9, 2, 6];

  it('F32, BF16, FP8 with partial [3, 5] blocks, and F32/FP8 in 3 shards give equal logits', () => {
    const variants: Parameters<typeof writeCheckpoint>[3][] = [
      { storeAs: 'F32' },
      { storeAs: 'BF16' },
      { storeAs: 'FP8', blockSize: [3, 5] },
      { storeAs: 'F32', shards: 3 },
      { storeAs: 'FP8', blockSize: [3, 5], shards: 3 },
    ];
    const logits = variants.map((options) => {
      const dir = freshDir();
      writeCheckpoint(dir, config, weights, options);
      const model = loadReferenceModel(dir);
      // The weights read back are exactly the ones written.
      for (const name of ['model.layers.1.mlp.experts.3.down_proj.weight', 'model.layers.0.self_attn.kv_b_proj.weight', 'lm_head.weight']) {
        expect([...model.weight(name).data]).toEqual([...weights.get(name)!.values]);
      }
      return referenceLogits(model, tokens);
    });
    for (const l of logits.slice(1)) expect(l).toEqual(logits[0]);
    for (const row of logits[0]!) for (const v of row) expect(Number.isFinite(v)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// RoPE and YaRN
// ---------------------------------------------------------------------------------------------

describe('rotary embedding', () => {
  it('without rope_scaling: inv_freq = theta^(-2i/d), no mscale, scale = qk_head_dim^-0.5', () => {
    const r = ropeParameters({ qk_nope_head_dim: 12, qk_rope_head_dim: 8, rope_theta: 10000, rope_scaling: null });
    expect([...r.invFreq].map((f, i) => f / [1, 0.1, 0.01, 0.001][i]!)).toEqual([1, 1, 1, 1].map((x) => expect.closeTo(x, 14)));
    expect(r.mscale).toBe(1);
    expect(r.softmaxScale).toBeCloseTo(1 / Math.sqrt(20), 15);
  });

  it('YaRN with DeepSeek-V3 values on d = 16: low 2, high 6, hand-computed ramp', () => {
    // find_correction_dim(32) = 16·ln(4096/(64π))/(2·ln 1e4) = 2.618 → low 2;
    // find_correction_dim(1)  = 16·ln(4096/(2π))/(2·ln 1e4)  = 5.628 → high 6.
    // ramp(i) = clamp((i − 2)/4): mask = 1 − ramp; inv_freq = base·(mask + (1 − mask)/40).
    const factors = [1, 1, 1, 0.75 + 0.25 / 40, 0.5 + 0.5 / 40, 0.25 + 0.75 / 40, 1 / 40, 1 / 40];
    const rs = { factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 };
    const r = ropeParameters({ qk_nope_head_dim: 16, qk_rope_head_dim: 16, rope_theta: 10000, rope_scaling: rs });
    factors.forEach((f, i) => expect(r.invFreq[i]! / (10000 ** (-i / 8) * f)).toBeCloseTo(1, 13));
    expect(r.mscale).toBe(1);
    const m = 1 + 0.1 * Math.log(40);
    expect(r.softmaxScale).toBeCloseTo((m * m) / Math.sqrt(32), 15);
  });

  it('YaRN on d = 8 with mscale ≠ mscale_all_dim, and the low == high case', () => {
    // original 32: find_correction_dim(32) < 0 → low 0; find_correction_dim(1) = 0.707 → high 1.
    const r = ropeParameters({
      qk_nope_head_dim: 8,
      qk_rope_head_dim: 8,
      rope_theta: 10000,
      rope_scaling: { factor: 4, original_max_position_embeddings: 32, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 0.5 },
    });
    [1, 0.1 / 4, 0.01 / 4, 0.001 / 4].forEach((f, i) => expect(r.invFreq[i]! / f).toBeCloseTo(1, 13));
    expect(r.mscale).toBeCloseTo((1 + 0.1 * Math.log(4)) / (1 + 0.05 * Math.log(4)), 15);
    expect(r.softmaxScale).toBeCloseTo((1 + 0.05 * Math.log(4)) ** 2 / 4, 15);

    // beta_slow 8: find_correction_dim(8) = 8·ln(32/(16π))/(2 ln 1e4) < 0 → high 0 = low → high 0.001.
    const same = ropeParameters({
      qk_nope_head_dim: 8,
      qk_rope_head_dim: 8,
      rope_theta: 10000,
      rope_scaling: { factor: 4, original_max_position_embeddings: 32, beta_fast: 32, beta_slow: 8, mscale: 1, mscale_all_dim: 0 },
    });
    [1, 0.1 / 4, 0.01 / 4, 0.001 / 4].forEach((f, i) => expect(same.invFreq[i]! / f).toBeCloseTo(1, 13));
    expect(same.mscale).toBeCloseTo(1 + 0.1 * Math.log(4), 15); // get_mscale(4, 0) = 1
    expect(same.softmaxScale).toBeCloseTo(1 / 4, 15);
  });

  it('config.json rope_scaling defaults and a factor ≤ 1', () => {
    const c = parseConfig({ ...tinyConfig(), rope_scaling: { type: 'yarn', factor: 1, original_max_position_embeddings: 4 } });
    expect(c.rope_scaling).toMatchObject({ beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 0 });
    const r = ropeParameters(c);
    expect(r.mscale).toBe(1);
    expect(r.softmaxScale).toBeCloseTo(1 / Math.sqrt(8), 15);
    expect(() => parseConfig({ ...tinyConfig(), rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/yarn/);
  });

  it('rotates interleaved pairs (2i, 2i+1) and scores depend only on relative position', () => {
    const rope = ropeParameters({ qk_nope_head_dim: 4, qk_rope_head_dim: 6, rope_theta: 10, rope_scaling: null });
    const y = applyRope(Float64Array.from([0, 0, 1, 0, 0, 0]), 3, rope);
    const theta = 3 * 10 ** (-2 / 6);
    expect([...y].map((v) => v + 0)).toEqual([0, 0, Math.cos(theta), Math.sin(theta), 0, 0]);

    const q = randomVector(6, 1);
    const k = randomVector(6, 2);
    const score = (tq: number, tk: number): number => dot(applyRope(q, tq, rope), applyRope(k, tk, rope));
    expect(score(7, 3)).toBeCloseTo(score(4, 0), 12);
    expect(score(9, 9)).toBeCloseTo(dot(q, k), 12);
    expect(Math.abs(score(5, 0) - score(0, 5))).toBeGreaterThan(1e-6);

    // YaRN's mscale multiplies cos and sin: lengths grow by mscale.
    const yarn = ropeParameters({ ...parseConfig(tinyConfig()) });
    expect(yarn.mscale).not.toBe(1);
    const v = randomVector(4, 3);
    expect(Math.hypot(...applyRope(v, 5, yarn))).toBeCloseTo(Math.hypot(...v) * yarn.mscale, 12);
  });
});

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

describe('attention (MLA)', () => {
  const config = tinyConfig();
  const weights = tinyWeights(config, 21);
  let model: ReferenceModel;
  beforeAll(() => {
    const dir = freshDir();
    writeCheckpoint(dir, config, weights, { storeAs: 'BF16' });
    model = loadReferenceModel(dir);
  });

  it('at position 0 is o_proj of the values (softmax over one key), whatever the queries', () => {
    for (const layer of [0, 1]) {
      const p = `model.layers.${layer}.self_attn`;
      const x = randomVector(8, 100 + layer);
      const latent = mv(weights, `${p}.kv_a_proj_with_mqa.weight`, x).slice(0, 4);
      const kv = mv(weights, `${p}.kv_b_proj.weight`, norm(latent, weights.get(`${p}.kv_a_layernorm.weight`)!.values));
      // Per head: 4 k_nope values, then 3 v values.
      const v = [...kv.slice(4, 7), ...kv.slice(11, 14)];
      const expected = mv(weights, `${p}.o_proj.weight`, v);
      const actual = referenceAttention(model, layer, [x])[0]!;
      expect(maxRelDiff(actual, expected)).toBeLessThan(1e-13);

      // Scrambling the query weights changes nothing at position 0 but does at position 1.
      const qb = `${p}.q_b_proj.weight`;
      const scrambled = withWeight(model, qb, scaled(model.weight(qb), (w, i) => w * (1 + (i % 5))));
      const x1 = randomVector(8, 200 + layer);
      expect(referenceAttention(scrambled, layer, [x])[0]).toEqual(actual);
      const before = referenceAttention(model, layer, [x, x1])[1]!;
      const after = referenceAttention(scrambled, layer, [x, x1])[1]!;
      expect(maxRelDiff(after, before)).toBeGreaterThan(1e-6);
    }
  });

  it('equals the absorbed form (scores against the normalized latent, W_UK folded into q, W_UV after)', () => {
    const c = model.config;
    const nH = 2;
    const nope = 4;
    const vDim = 3;
    const rank = 4;
    const layer = 1;
    const p = `model.layers.${layer}.self_attn`;
    const xs = Array.from({ length: 6 }, (_, t) => randomVector(8, 300 + t));
    const kvb = tensor(weights, `${p}.kv_b_proj.weight`).v; // [nH·(nope + v), rank]
    const row = (r: number): number[] => Array.from(kvb.slice(r * rank, (r + 1) * rank));

    // Rotation as complex multiplication (a + ib)·mscale·e^{iθ} on pairs (2i, 2i+1).
    const rotate = (x: number[], pos: number): number[] => {
      const out: number[] = [];
      for (let i = 0; i < x.length; i += 2) {
        const theta = pos * model.rope.invFreq[i / 2]!;
        const [re, im] = [Math.cos(theta) * model.rope.mscale, Math.sin(theta) * model.rope.mscale];
        out.push(x[i]! * re - x[i + 1]! * im, x[i]! * im + x[i + 1]! * re);
      }
      return out;
    };

    const latents = xs.map((x) => {
      const a = mv(weights, `${p}.kv_a_proj_with_mqa.weight`, x);
      return norm(a.slice(0, rank), weights.get(`${p}.kv_a_layernorm.weight`)!.values, c.rms_norm_eps);
    });
    const kPes = xs.map((x, t) => rotate(mv(weights, `${p}.kv_a_proj_with_mqa.weight`, x).slice(rank), t));
    const expected = xs.map((x, t) => {
      const qa = norm(mv(weights, `${p}.q_a_proj.weight`, x), weights.get(`${p}.q_a_layernorm.weight`)!.values, c.rms_norm_eps);
      const q = mv(weights, `${p}.q_b_proj.weight`, qa);
      const heads: number[] = [];
      for (let h = 0; h < nH; h++) {
        const qNope = q.slice(h * 8, h * 8 + nope);
        const qPe = rotate(q.slice(h * 8 + nope, h * 8 + 8), t);
        // q_nope · (W_UK c) = (W_UKᵀ q_nope) · c
        const qLatent = new Array<number>(rank).fill(0);
        for (let d = 0; d < nope; d++) row(h * (nope + vDim) + d).forEach((w, r) => (qLatent[r]! += qNope[d]! * w));
        const logits = latents.slice(0, t + 1).map((cj, j) => (dot(qLatent, cj) + dot(qPe, kPes[j]!)) * model.rope.softmaxScale);
        const weightsJ = logits.map((l) => Math.exp(l));
        const z = weightsJ.reduce((a, b) => a + b, 0);
        const mixed = new Array<number>(rank).fill(0);
        latents.slice(0, t + 1).forEach((cj, j) => cj.forEach((v, r) => (mixed[r]! += (weightsJ[j]! / z) * v)));
        for (let d = 0; d < vDim; d++) heads.push(dot(row(h * (nope + vDim) + nope + d), mixed));
      }
      return mv(weights, `${p}.o_proj.weight`, heads);
    });
    const actual = referenceAttention(model, layer, xs);
    actual.forEach((a, t) => expect(maxRelDiff(a, expected[t]!)).toBeLessThan(1e-12));
  });

  it('with q_lora_rank null uses q_proj', () => {
    const cfg = tinyConfig({ q_lora_rank: null });
    const w = tinyWeights(cfg, 22);
    expect(w.has('model.layers.0.self_attn.q_proj.weight')).toBe(true);
    expect(w.has('model.layers.0.self_attn.q_a_proj.weight')).toBe(false);
    const dir = freshDir();
    writeCheckpoint(dir, cfg, w, { storeAs: 'F32' });
    const m = loadReferenceModel(dir);
    const q = 'model.layers.0.self_attn.q_proj.weight';
    const zeroQ = withWeight(m, q, scaled(m.weight(q), () => 0));
    const tokens = [1, 2, 3];
    const a = referenceLogits(m, tokens);
    const b = referenceLogits(zeroQ, tokens);
    expect(b[0]).toEqual(a[0]);
    expect(maxRelDiff(b[2]!, a[2]!)).toBeGreaterThan(1e-6);
  });
});

// ---------------------------------------------------------------------------------------------
// MoE
// ---------------------------------------------------------------------------------------------

describe('MoE routing (sigmoid, noaux_tc)', () => {
  /** An in-memory model whose layer-1 gate gives experts exactly the sigmoid scores `scores` for x = e0. */
  function gateModel(scores: number[], bias: number[], overrides: Record<string, unknown> = {}): ReferenceModel {
    const config = parseConfig(tinyConfig(overrides));
    const gate = new Float64Array(8 * 8);
    scores.forEach((s, e) => (gate[e * 8] = Math.log(s / (1 - s))));
    const tensors = new Map<string, F64Tensor>([
      ['model.layers.1.mlp.gate.weight', { shape: [8, 8], data: gate }],
      ['model.layers.1.mlp.gate.e_score_correction_bias', { shape: [8], data: Float64Array.from(bias) }],
    ]);
    return { config, rope: ropeParameters(config), weight: (n) => tensors.get(n)! };
  }
  const e0 = Float64Array.from([1, 0, 0, 0, 0, 0, 0, 0]);
  // Groups of 2: {0,1} sum 1.0 (holds the single best expert), {2,3} 1.2, {4,5} 1.1, {6,7} 0.6.
  const scores = [0.95, 0.05, 0.6, 0.6, 0.55, 0.55, 0.5, 0.1];
  const noBias = new Array<number>(8).fill(0);

  it('chooses only from the topk_group groups ranked by the sum of their top-2 scores', () => {
    const r = referenceRoute(gateModel(scores, noBias), 1, e0);
    // Expert 0 is the best overall, but its group ranks third; 2 and 3 tie: lower index first.
    expect(r.experts).toEqual([2, 3]);
    r.weights.forEach((w) => expect(w).toBeCloseTo(0.5 * 2.5, 12));

    const oneGroup = referenceRoute(gateModel(scores, noBias, { topk_group: 1, num_experts_per_tok: 2 }), 1, e0);
    expect(oneGroup.experts).toEqual([2, 3]);
    const allGroups = referenceRoute(gateModel(scores, noBias, { topk_group: 4 }), 1, e0);
    expect(allGroups.experts).toEqual([0, 2]);
  });

  it('the correction bias steers the choice but the weights use the unbiased scores', () => {
    const bias = [0, 0, 0, 0, 0, 0.3, 0, 0];
    const r = referenceRoute(gateModel(scores, bias), 1, e0);
    // Group {4,5} now sums to 0.55 + 0.85 = 1.4: kept groups {4,5} and {2,3}.
    expect(r.experts).toEqual([5, 2]);
    expect(r.weights[0]).toBeCloseTo((0.55 / 1.15) * 2.5, 12);
    expect(r.weights[1]).toBeCloseTo((0.6 / 1.15) * 2.5, 12);

    const unnormalized = referenceRoute(gateModel(scores, bias, { norm_topk_prob: false }), 1, e0);
    expect(unnormalized.experts).toEqual([5, 2]);
    expect(unnormalized.weights[0]).toBeCloseTo(0.55 * 2.5, 12);
    expect(unnormalized.weights[1]).toBeCloseTo(0.6 * 2.5, 12);
  });

  it('which layers are MoE: n_routed_experts, first_k_dense_replace, moe_layer_freq', () => {
    const layers = (o: Record<string, unknown>): boolean[] => {
      const c = parseConfig(tinyConfig(o));
      return Array.from({ length: c.num_hidden_layers }, (_, l) => isMoeLayer(c, l));
    };
    expect(layers({})).toEqual([false, true]);
    expect(layers({ num_hidden_layers: 6, first_k_dense_replace: 1, moe_layer_freq: 2 })).toEqual([false, false, true, false, true, false]);
    expect(layers({ num_hidden_layers: 3, first_k_dense_replace: 0 })).toEqual([true, true, true]);
    expect(layers({ n_routed_experts: null })).toEqual([false, false]);
  });

  it('the MoE block is the shared expert plus the weighted chosen experts; the dense block is a SwiGLU MLP', () => {
    const config = tinyConfig();
    const weights = tinyWeights(config, 31);
    const dir = freshDir();
    writeCheckpoint(dir, config, weights, { storeAs: 'FP8' });
    const model = loadReferenceModel(dir);
    const swiglu = (prefix: string, x: ArrayLike<number>): number[] => {
      const g = mv(weights, `${prefix}.gate_proj.weight`, x);
      const u = mv(weights, `${prefix}.up_proj.weight`, x);
      return mv(weights, `${prefix}.down_proj.weight`, g.map((z, i) => (z / (1 + Math.exp(-z))) * u[i]!));
    };
    const x = randomVector(8, 7);
    expect(maxRelDiff(referenceFfn(model, 0, x), swiglu('model.layers.0.mlp', x))).toBeLessThan(1e-13);

    // Routing from scratch: sigmoid scores, bias, groups of 2, top-2 groups, top-2 experts.
    const s = mv(weights, 'model.layers.1.mlp.gate.weight', x).map((z) => 1 / (1 + Math.exp(-z)));
    const biased = s.map((v, e) => v + weights.get('model.layers.1.mlp.gate.e_score_correction_bias')!.values[e]!);
    const groupScore = [0, 1, 2, 3].map((g) => biased[2 * g]! + biased[2 * g + 1]!);
    const groups = [0, 1, 2, 3].sort((a, b) => groupScore[b]! - groupScore[a]! || a - b).slice(0, 2);
    const chosen = [0, 1, 2, 3, 4, 5, 6, 7]
      .filter((e) => groups.includes(Math.floor(e / 2)))
      .sort((a, b) => biased[b]! - biased[a]! || a - b)
      .slice(0, 2);
    const route = referenceRoute(model, 1, x);
    expect(route.experts).toEqual(chosen);
    const total = s[chosen[0]!]! + s[chosen[1]!]!;
    const expected = swiglu('model.layers.1.mlp.shared_experts', x);
    chosen.forEach((e) => swiglu(`model.layers.1.mlp.experts.${e}`, x).forEach((v, i) => (expected[i]! += ((2.5 * s[e]!) / total) * v)));
    expect(maxRelDiff(referenceFfn(model, 1, x), expected)).toBeLessThan(1e-13);
  });
});

// ---------------------------------------------------------------------------------------------
// Whole model
// ---------------------------------------------------------------------------------------------

describe('whole model', () => {
  const config = tinyConfig();
  const weights = tinyWeights(config, 41);
  let model: ReferenceModel;
  beforeAll(() => {
    const dir = freshDir();
    writeCheckpoint(dir, config, weights, { storeAs: 'F32' });
    model = loadReferenceModel(dir);
  });

  it('is causal: logits at t do not depend on tokens after t', () => {
    const a = [3, 1, 4, 1, 5, 9, 2, 6];
    const b = [3, 1, 4, 1, 15, 0, 7, 7];
    const la = referenceLogits(model, a);
    const lb = referenceLogits(model, b);
    const prefix = referenceLogits(model, a.slice(0, 4));
    expect(la).toHaveLength(8);
    for (let t = 0; t < 4; t++) {
      expect(lb[t]).toEqual(la[t]);
      expect(prefix[t]).toEqual(la[t]);
    }
    for (let t = 4; t < 8; t++) expect(maxRelDiff(lb[t]!, la[t]!)).toBeGreaterThan(1e-6);
  });

  it('with o_proj and every down_proj zero, logits = lm_head · RMSNorm(embedding, model.norm)', () => {
    const w = tinyWeights(config, 41);
    for (const name of w.keys()) if (/o_proj\.weight$|down_proj\.weight$/.test(name)) setValues(w, name, () => 0);
    const dir = freshDir();
    writeCheckpoint(dir, config, w, { storeAs: 'BF16' });
    const m = loadReferenceModel(dir);
    const tokens = [0, 7, 15];
    const logits = referenceLogits(m, tokens);
    tokens.forEach((tok, t) => {
      const embedding = w.get('model.embed_tokens.weight')!.values.slice(tok * 8, tok * 8 + 8);
      const expected = mv(w, 'lm_head.weight', norm(embedding, w.get('model.norm.weight')!.values));
      expect(maxRelDiff(logits[t]!, expected)).toBeLessThan(1e-14);
    });
  });

  it('ignores the MTP layer model.layers.{num_hidden_layers}.*', () => {
    const tokens = [2, 7, 1, 8, 2, 8];
    const expected = referenceLogits(model, tokens);

    // MTP tensors full of NaN: nothing changes.
    const poisoned = tinyWeights(config, 41);
    const mtp = [...poisoned.keys()].filter((n) => n.startsWith('model.layers.2.'));
    expect(mtp).toContain('model.layers.2.eh_proj.weight');
    expect(mtp).toContain('model.layers.2.mlp.experts.0.gate_proj.weight');
    for (const name of mtp) setValues(poisoned, name, () => NaN);
    const dir = freshDir();
    writeCheckpoint(dir, config, poisoned, { storeAs: 'F32' });
    expect(referenceLogits(loadReferenceModel(dir), tokens)).toEqual(expected);

    // MTP tensors absent: nothing changes either.
    const dir2 = freshDir();
    writeCheckpoint(dir2, config, weights, { storeAs: 'F32', omit: (n) => n.startsWith('model.layers.2.') });
    expect(referenceLogits(loadReferenceModel(dir2), tokens)).toEqual(expected);
  });

  it('greedy: argmax of the full-sequence logits each step; logits[0] is the last prompt position', () => {
    const prompt = [5, 3, 11];
    const g = referenceGreedy(model, prompt, 4);
    expect(g.tokenIds).toHaveLength(4);
    expect(g.logits).toHaveLength(4);
    for (let i = 0; i < 4; i++) {
      const full = referenceLogits(model, [...prompt, ...g.tokenIds.slice(0, i)]);
      const last = full.at(-1)!;
      expect(g.logits[i]).toEqual(last);
      const max = Math.max(...last);
      expect(g.tokenIds[i]).toBe(last.indexOf(max));
    }
  });

  it('greedy ties go to the lowest token id', () => {
    // lm_head rows: 0 → zero, 1..4 → −u, 5..15 → u. Logits tie within 1..4 and within 5..15.
    const head = model.weight('lm_head.weight');
    const u = head.data.slice(0, 8);
    const tied = withWeight(model, 'lm_head.weight', scaled(head, (_, i) => {
      const r = Math.floor(i / 8);
      return r === 0 ? 0 : r < 5 ? -u[i % 8]! : u[i % 8]!;
    }));
    const g = referenceGreedy(tied, [1, 2], 3);
    g.logits.forEach((l, i) => {
      expect(l[5]).not.toBe(0);
      expect(g.tokenIds[i]).toBe(l[5]! > 0 ? 5 : 1);
    });
  });

  it('rejects token ids outside the vocabulary', () => {
    expect(() => referenceLogits(model, [16])).toThrow(/vocabulary/);
  });
});

// The BF16 writer refuses values bfloat16 cannot hold exactly, so the equal-logits test is meaningful.
it('the test writer only writes exact bfloat16', () => {
  expect(() => bf16Bytes([0.1])).toThrow();
  expect(bf16Bytes([1, -2]).readUInt16LE(0)).toBe(0x3f80);
});
