import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Hand-rolled tiny DeepSeek-V3 checkpoints for the reference's self-tests. Written here, apart
 * from both the reference's reader and the project's checkpoint maker.
 *
 * Every weight value is built to be exactly representable in float32, bfloat16 and as
 * (float8_e4m3 value × float32 block scale), so one set of weights written as F32, BF16 or FP8
 * must read back to identical float64 numbers.
 */

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

export type RawConfig = Record<string, unknown>;

/** 2 layers (layer 0 dense, layer 1 MoE: 8 experts in 4 groups), hidden 8, vocabulary 16, YaRN, one MTP layer. */
export function tinyConfig(overrides: RawConfig = {}): RawConfig {
  return {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    vocab_size: 16,
    hidden_size: 8,
    intermediate_size: 12,
    moe_intermediate_size: 5,
    num_hidden_layers: 2,
    num_nextn_predict_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    q_lora_rank: 6,
    kv_lora_rank: 4,
    qk_nope_head_dim: 4,
    qk_rope_head_dim: 4,
    v_head_dim: 3,
    n_routed_experts: 8,
    n_shared_experts: 1,
    num_experts_per_tok: 2,
    n_group: 4,
    topk_group: 2,
    norm_topk_prob: true,
    routed_scaling_factor: 2.5,
    scoring_func: 'sigmoid',
    topk_method: 'noaux_tc',
    first_k_dense_replace: 1,
    moe_layer_freq: 1,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 4, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 0.8 },
    max_position_embeddings: 64,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/** linear: FP8 with block scales in an FP8 checkpoint; the rest stay BF16 (bias: F32) as DeepSeek ships them. */
export type Kind = 'linear' | 'norm' | 'embedding' | 'head' | 'router' | 'bias';

export interface TinyTensor {
  readonly shape: number[];
  /** The exact float64 value of every element. */
  values: Float64Array;
  readonly kind: Kind;
  /** For linear weights: the FP8 byte of every element and the block scales, values = code · scale. */
  codes?: Uint8Array;
  scales?: Float64Array;
}

export type TinyWeights = Map<string, TinyTensor>;

/** float8_e4m3fn bytes with their values, worked out by hand: S EEEE MMM, bias 7. */
export const FP8_TABLE: ReadonlyArray<readonly [number, number]> = [
  [0x00, 0], //    0.0000.000
  [0x28, 0.25], // 0.0101.000 = 2^-2
  [0x2c, 0.375], // 0.0101.100 = 2^-2 · 1.5
  [0x30, 0.5], //  0.0110.000 = 2^-1
  [0x34, 0.75], // 0.0110.100 = 2^-1 · 1.5
  [0x38, 1], //    0.0111.000 = 2^0
  [0x3a, 1.25], // 0.0111.010 = 2^0 · 1.25
  [0x3c, 1.5], //  0.0111.100 = 2^0 · 1.5
  [0xa8, -0.25],
  [0xb0, -0.5],
  [0xb4, -0.75],
  [0xb8, -1],
  [0xba, -1.25],
  [0xbc, -1.5],
];

/** Block scales with at most two significant bits, so code · scale stays exact in bfloat16. */
const SCALES = [0.125, 0.1875, 0.25, 0.375];

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Names, shapes and kinds of every tensor of a DeepSeek-V3 checkpoint, MTP layers included. */
export function tensorPlan(config: RawConfig): { name: string; shape: number[]; kind: Kind }[] {
  const c = config as Record<string, number> & { q_lora_rank: number | null };
  const H = c.hidden_size;
  const nH = c.num_attention_heads;
  const qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const plan: { name: string; shape: number[]; kind: Kind }[] = [];
  const add = (name: string, shape: number[], kind: Kind): void => void plan.push({ name, shape, kind });
  const swiglu = (p: string, inter: number): void => {
    add(`${p}.gate_proj.weight`, [inter, H], 'linear');
    add(`${p}.up_proj.weight`, [inter, H], 'linear');
    add(`${p}.down_proj.weight`, [H, inter], 'linear');
  };
  const layer = (l: number, moe: boolean): void => {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H], 'norm');
    add(`${p}.post_attention_layernorm.weight`, [H], 'norm');
    if (c.q_lora_rank == null) {
      add(`${p}.self_attn.q_proj.weight`, [nH * qk, H], 'linear');
    } else {
      add(`${p}.self_attn.q_a_proj.weight`, [c.q_lora_rank, H], 'linear');
      add(`${p}.self_attn.q_a_layernorm.weight`, [c.q_lora_rank], 'norm');
      add(`${p}.self_attn.q_b_proj.weight`, [nH * qk, c.q_lora_rank], 'linear');
    }
    add(`${p}.self_attn.kv_a_proj_with_mqa.weight`, [c.kv_lora_rank + c.qk_rope_head_dim, H], 'linear');
    add(`${p}.self_attn.kv_a_layernorm.weight`, [c.kv_lora_rank], 'norm');
    add(`${p}.self_attn.kv_b_proj.weight`, [nH * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank], 'linear');
    add(`${p}.self_attn.o_proj.weight`, [H, nH * c.v_head_dim], 'linear');
    if (moe) {
      add(`${p}.mlp.gate.weight`, [c.n_routed_experts, H], 'router');
      add(`${p}.mlp.gate.e_score_correction_bias`, [c.n_routed_experts], 'bias');
      for (let e = 0; e < c.n_routed_experts; e++) swiglu(`${p}.mlp.experts.${e}`, c.moe_intermediate_size);
      if (c.n_shared_experts > 0) swiglu(`${p}.mlp.shared_experts`, c.moe_intermediate_size * c.n_shared_experts);
    } else {
      swiglu(`${p}.mlp`, c.intermediate_size);
    }
  };
  const isMoe = (l: number): boolean => c.n_routed_experts > 0 && l >= c.first_k_dense_replace && l % c.moe_layer_freq === 0;

  add('model.embed_tokens.weight', [c.vocab_size, H], 'embedding');
  for (let l = 0; l < c.num_hidden_layers; l++) layer(l, isMoe(l));
  for (let k = 0; k < (c.num_nextn_predict_layers ?? 0); k++) {
    const l = c.num_hidden_layers + k;
    const p = `model.layers.${l}`;
    add(`${p}.embed_tokens.weight`, [c.vocab_size, H], 'embedding');
    add(`${p}.enorm.weight`, [H], 'norm');
    add(`${p}.hnorm.weight`, [H], 'norm');
    add(`${p}.eh_proj.weight`, [H, 2 * H], 'linear');
    layer(l, true);
    add(`${p}.shared_head.norm.weight`, [H], 'norm');
    add(`${p}.shared_head.head.weight`, [c.vocab_size, H], 'head');
  }
  add('model.norm.weight', [H], 'norm');
  add('lm_head.weight', [c.vocab_size, H], 'head');
  return plan;
}

/**
 * Random weights for `config`. Linear weights are FP8 table values times a scale per
 * `blockSize` block (so they can be written as FP8 with exactly those blocks).
 */
export function tinyWeights(config: RawConfig, seed: number, blockSize: [number, number] = [3, 5]): TinyWeights {
  const next = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const out: TinyWeights = new Map();
  for (const { name, shape, kind } of tensorPlan(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float64Array(n);
    if (kind === 'linear') {
      const [rows, cols] = shape as [number, number];
      const [bo, bi] = blockSize;
      const scaleCols = Math.ceil(cols / bi);
      const scales = Float64Array.from({ length: Math.ceil(rows / bo) * scaleCols }, () => pick(SCALES));
      const codes = new Uint8Array(n);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const [code, value] = pick(FP8_TABLE);
          codes[r * cols + c] = code;
          values[r * cols + c] = value * scales[Math.floor(r / bo) * scaleCols + Math.floor(c / bi)]!;
        }
      }
      out.set(name, { shape, values, kind, codes, scales });
      continue;
    }
    for (let i = 0; i < n; i++) {
      if (kind === 'norm') values[i] = pick([0.75, 1, 1.25, 1.5]);
      else if (kind === 'bias') values[i] = pick([-3, -2, -1, 0, 1, 2, 3]) / 64;
      else if (kind === 'router') values[i] = pick(FP8_TABLE)[1];
      else values[i] = pick(FP8_TABLE)[1] * 0.5; // embedding, head
    }
    out.set(name, { shape, values, kind });
  }
  return out;
}

/** Sets a tensor to new exact values (dropping its FP8 form: write such a checkpoint as F32 or BF16). */
export function setValues(weights: TinyWeights, name: string, values: (i: number) => number): void {
  const t = weights.get(name);
  if (!t) throw new Error(`no tensor ${name}`);
  t.values = Float64Array.from({ length: t.values.length }, (_, i) => values(i));
  delete t.codes;
  delete t.scales;
}

// ---------------------------------------------------------------------------------------------
// Writing safetensors
// ---------------------------------------------------------------------------------------------

export interface RawTensor {
  readonly name: string;
  readonly dtype: 'F32' | 'BF16' | 'F16' | 'F8_E4M3';
  readonly shape: number[];
  readonly bytes: Buffer;
}

/** 8-byte LE header length, JSON header (space-padded to 8 bytes), then the tensors back to back. */
export function writeSafetensors(path: string, tensors: RawTensor[], metadata: Record<string, string> = { format: 'pt' }): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  let json = JSON.stringify(header);
  while (json.length % 8 !== 0) json += ' ';
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, Buffer.from(json, 'utf8'), ...tensors.map((t) => t.bytes)]));
}

export function f32Bytes(values: ArrayLike<number>): Buffer {
  const b = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) {
    b.writeFloatLE(values[i]!, i * 4);
    if (!Number.isNaN(values[i]!) && b.readFloatLE(i * 4) !== values[i]) throw new Error(`${values[i]} is not exact in float32`);
  }
  return b;
}

/** bfloat16 = the top half of the float32 bits; only for values exact in bfloat16. */
export function bf16Bytes(values: ArrayLike<number>): Buffer {
  const f32 = f32Bytes(values);
  const b = Buffer.alloc(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const bits = f32.readUInt32LE(i * 4);
    if ((bits & 0xffff) !== 0) throw new Error(`${values[i]} is not exact in bfloat16`);
    b.writeUInt16LE(bits >>> 16, i * 2);
  }
  return b;
}

export type StoreAs = 'F32' | 'BF16' | 'FP8';

export interface WriteOptions {
  storeAs: StoreAs;
  /** FP8 block size; must be the one the weights were made with. */
  blockSize?: [number, number];
  /** Split into this many shard files with a model.safetensors.index.json. */
  shards?: number;
  /** Leave out tensors whose name matches. */
  omit?: (name: string) => boolean;
}

/** Writes config.json and the weights into `dir` (created if needed). */
export function writeCheckpoint(dir: string, config: RawConfig, weights: TinyWeights, options: WriteOptions): void {
  mkdirSync(dir, { recursive: true });
  const blockSize = options.blockSize ?? [3, 5];
  const raw: RawTensor[] = [];
  for (const [name, t] of weights) {
    if (options.omit?.(name)) continue;
    if (t.kind === 'bias' || options.storeAs === 'F32') {
      raw.push({ name, dtype: 'F32', shape: t.shape, bytes: f32Bytes(t.values) });
    } else if (options.storeAs === 'FP8' && t.kind === 'linear' && t.codes && t.scales) {
      raw.push({ name, dtype: 'F8_E4M3', shape: t.shape, bytes: Buffer.from(t.codes) });
      const [rows, cols] = t.shape as [number, number];
      const scaleShape = [Math.ceil(rows / blockSize[0]), Math.ceil(cols / blockSize[1])];
      raw.push({ name: name.replace(/\.weight$/, '.weight_scale_inv'), dtype: 'F32', shape: scaleShape, bytes: f32Bytes(t.scales) });
    } else {
      raw.push({ name, dtype: 'BF16', shape: t.shape, bytes: bf16Bytes(t.values) });
    }
  }
  const fullConfig =
    options.storeAs === 'FP8'
      ? { ...config, quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: blockSize } }
      : config;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(fullConfig, null, 2));

  const shards = options.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), raw);
    return;
  }
  const fileName = (s: number): string => `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const mine = raw.filter((_, i) => i % shards === s);
    for (const t of mine) weightMap[t.name] = fileName(s);
    writeSafetensors(join(dir, fileName(s)), mine);
  }
  const totalSize = raw.reduce((a, t) => a + t.bytes.length, 0);
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
}
