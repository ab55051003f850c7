import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCheckpointF64, type F64Tensor } from './safetensors-f64.js';

/**
 * DeepSeek-V3 / R1 in float64, written the plain way: naive MLA with full per-head keys and
 * values, no cache, no batching, one token vector at a time. It is the spec the engine is checked
 * against and shares no code with the project's packages.
 *
 * Semantics follow Hugging Face `modeling_deepseek.py` (DeepseekV3ForCausalLM) and DeepSeek's
 * `inference/model.py`, with the tensor names deepseek-ai/DeepSeek-V3 ships. The
 * multi-token-prediction layers `model.layers.{num_hidden_layers + k}.*` are never read.
 */
type Vec = Float64Array;

// =============================================================================================
// Configuration
// =============================================================================================

export interface YarnScaling {
  readonly factor: number;
  readonly original_max_position_embeddings: number;
  readonly beta_fast: number;
  readonly beta_slow: number;
  readonly mscale: number;
  readonly mscale_all_dim: number;
}

/** The config.json keys the forward pass uses, with Hugging Face's defaults filled in. */
export interface ReferenceConfig {
  readonly hidden_size: number;
  readonly vocab_size: number;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly q_lora_rank: number | null;
  readonly kv_lora_rank: number;
  readonly qk_nope_head_dim: number;
  readonly qk_rope_head_dim: number;
  readonly v_head_dim: number;
  readonly intermediate_size: number;
  readonly moe_intermediate_size: number;
  readonly n_routed_experts: number | null;
  readonly n_shared_experts: number;
  readonly num_experts_per_tok: number;
  readonly n_group: number;
  readonly topk_group: number;
  readonly norm_topk_prob: boolean;
  readonly routed_scaling_factor: number;
  readonly first_k_dense_replace: number;
  readonly moe_layer_freq: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  readonly rope_scaling: YarnScaling | null;
  /** quantization_config.weight_block_size, or null for an unquantized checkpoint. */
  readonly weight_block_size: [number, number] | null;
}

/** Reads the config.json object, checking what this reference implements. */
export function parseConfig(raw: Record<string, unknown>): ReferenceConfig {
  const num = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`reference: config.json ${key} must be a number, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const scoring = raw.scoring_func ?? 'sigmoid';
  if (scoring !== 'sigmoid') throw new Error(`reference: scoring_func ${String(scoring)} is not implemented (DeepSeek-V3 uses sigmoid)`);
  const topkMethod = raw.topk_method ?? 'noaux_tc';
  if (topkMethod !== 'noaux_tc') throw new Error(`reference: topk_method ${String(topkMethod)} is not implemented (DeepSeek-V3 uses noaux_tc)`);

  let rope_scaling: YarnScaling | null = null;
  const rs = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (rs) {
    const type = rs.type ?? rs.rope_type;
    if (type !== 'yarn') throw new Error(`reference: rope_scaling type ${String(type)} is not implemented (only yarn)`);
    // Defaults as in DeepseekV3YarnRotaryEmbedding.
    const n = (key: string, fallback: number): number => (typeof rs[key] === 'number' ? (rs[key] as number) : fallback);
    rope_scaling = {
      factor: n('factor', 1),
      original_max_position_embeddings: n('original_max_position_embeddings', 4096),
      beta_fast: n('beta_fast', 32),
      beta_slow: n('beta_slow', 1),
      mscale: n('mscale', 1),
      mscale_all_dim: n('mscale_all_dim', 0),
    };
  }

  const quant = raw.quantization_config as { weight_block_size?: [number, number] } | undefined;
  const nRouted = raw.n_routed_experts == null ? null : num('n_routed_experts');
  const nGroup = num('n_group', 1);
  return {
    hidden_size: num('hidden_size'),
    vocab_size: num('vocab_size'),
    num_hidden_layers: num('num_hidden_layers'),
    num_attention_heads: num('num_attention_heads'),
    q_lora_rank: raw.q_lora_rank == null ? null : num('q_lora_rank'),
    kv_lora_rank: num('kv_lora_rank'),
    qk_nope_head_dim: num('qk_nope_head_dim'),
    qk_rope_head_dim: num('qk_rope_head_dim'),
    v_head_dim: num('v_head_dim'),
    intermediate_size: num('intermediate_size'),
    moe_intermediate_size: num('moe_intermediate_size', 0),
    n_routed_experts: nRouted,
    n_shared_experts: num('n_shared_experts', 0),
    num_experts_per_tok: num('num_experts_per_tok', 0),
    n_group: nGroup,
    topk_group: num('topk_group', nGroup),
    norm_topk_prob: raw.norm_topk_prob === true,
    routed_scaling_factor: num('routed_scaling_factor', 1),
    first_k_dense_replace: num('first_k_dense_replace', 0),
    moe_layer_freq: num('moe_layer_freq', 1),
    rms_norm_eps: num('rms_norm_eps', 1e-6),
    rope_theta: num('rope_theta', 10000),
    rope_scaling,
    weight_block_size: quant?.weight_block_size ? [quant.weight_block_size[0], quant.weight_block_size[1]] : null,
  };
}

// =============================================================================================
// Rotary embedding (with YaRN) and the attention scale
// =============================================================================================

export interface RopeParameters {
  /** Rotation frequency of pair i (elements 2i, 2i+1 of a rope vector), i in 0..d/2-1. */
  readonly invFreq: Float64Array;
  /** YaRN's `_mscale`: cos and sin are both multiplied by it (1 without YaRN). */
  readonly mscale: number;
  /** The factor on q·k: (qk_nope_head_dim + qk_rope_head_dim)^-0.5, times get_mscale(factor, mscale_all_dim)² with YaRN. */
  readonly softmaxScale: number;
}

/** YaRN's attention-magnitude correction. */
export function yarnGetMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** Hugging Face DeepseekV3YarnRotaryEmbedding (applied whenever rope_scaling is present). */
export function ropeParameters(c: Pick<ReferenceConfig, 'qk_nope_head_dim' | 'qk_rope_head_dim' | 'rope_theta' | 'rope_scaling'>): RopeParameters {
  const d = c.qk_rope_head_dim;
  const base = c.rope_theta;
  const half = d / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / base ** ((2 * i) / d);

  let softmaxScale = 1 / Math.sqrt(c.qk_nope_head_dim + d);
  const rs = c.rope_scaling;
  if (!rs) return { invFreq, mscale: 1, softmaxScale };

  // Which dimension rotates `numRotations` times over the original context.
  const findCorrectionDim = (numRotations: number): number =>
    (d * Math.log(rs.original_max_position_embeddings / (numRotations * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(findCorrectionDim(rs.beta_fast)), 0);
  let high = Math.min(Math.ceil(findCorrectionDim(rs.beta_slow)), d - 1);
  if (low === high) high += 0.001;

  for (let i = 0; i < half; i++) {
    const freqExtra = invFreq[i]!; // extrapolation: the original frequency
    const freqInter = invFreq[i]! / rs.factor; // interpolation: slowed down by `factor`
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const invFreqMask = 1 - ramp;
    invFreq[i] = freqInter * (1 - invFreqMask) + freqExtra * invFreqMask;
  }
  const mscale = yarnGetMscale(rs.factor, rs.mscale) / yarnGetMscale(rs.factor, rs.mscale_all_dim);
  const m = yarnGetMscale(rs.factor, rs.mscale_all_dim);
  softmaxScale *= m * m;
  return { invFreq, mscale, softmaxScale };
}

/**
 * Rotates each interleaved pair (x[2i], x[2i+1]) as the complex number x[2i] + i·x[2i+1] by
 * angle pos·invFreq[i]; cos and sin are multiplied by `mscale`.
 */
export function applyRope(x: Vec, pos: number, rope: RopeParameters): Vec {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length / 2; i++) {
    const theta = pos * rope.invFreq[i]!;
    const cos = Math.cos(theta) * rope.mscale;
    const sin = Math.sin(theta) * rope.mscale;
    const a = x[2 * i]!;
    const b = x[2 * i + 1]!;
    y[2 * i] = a * cos - b * sin;
    y[2 * i + 1] = a * sin + b * cos;
  }
  return y;
}

// =============================================================================================
// The model
// =============================================================================================

export interface ReferenceModel {
  readonly config: ReferenceConfig;
  readonly rope: RopeParameters;
  /** A float64 weight by its checkpoint name; throws if the checkpoint lacks it. */
  weight(name: string): F64Tensor;
}

/** Reads `dir/config.json` and every weight of the checkpoint in float64. */
export function loadReferenceModel(dir: string): ReferenceModel {
  const config = parseConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>);
  const weights = readCheckpointF64(dir, config.weight_block_size);
  return {
    config,
    rope: ropeParameters(config),
    weight(name: string): F64Tensor {
      const t = weights.get(name);
      if (!t) throw new Error(`reference: missing tensor ${name}`);
      return t;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/** y = W x for W [out, in]. */
function linear(W: F64Tensor, x: Vec): Vec {
  const [outDim, inDim] = W.shape as [number, number];
  if (W.shape.length !== 2 || inDim !== x.length) throw new Error(`reference: weight [${W.shape}] applied to a vector of ${x.length}`);
  const y = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) {
    let sum = 0;
    for (let i = 0; i < inDim; i++) sum += W.data[o * inDim + i]! * x[i]!;
    y[o] = sum;
  }
  return y;
}

/** x / sqrt(mean(x²) + eps) · w. */
function rmsNorm(x: Vec, w: F64Tensor, eps: number): Vec {
  if (w.data.length !== x.length) throw new Error(`reference: norm weight of ${w.data.length} on a vector of ${x.length}`);
  let sumSquares = 0;
  for (const v of x) sumSquares += v * v;
  const inv = 1 / Math.sqrt(sumSquares / x.length + eps);
  return x.map((v, i) => v * inv * w.data[i]!);
}

const silu = (z: number): number => z / (1 + Math.exp(-z));
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

function add(a: Vec, b: Vec): Vec {
  return a.map((v, i) => v + b[i]!);
}

/** SwiGLU MLP: down_proj(silu(gate_proj(x)) ⊙ up_proj(x)). */
function swiglu(m: ReferenceModel, prefix: string, x: Vec): Vec {
  const gate = linear(m.weight(`${prefix}.gate_proj.weight`), x);
  const up = linear(m.weight(`${prefix}.up_proj.weight`), x);
  return linear(m.weight(`${prefix}.down_proj.weight`), gate.map((g, i) => silu(g) * up[i]!));
}

// ---------------------------------------------------------------------------------------------
// Attention (MLA, naive form)
// ---------------------------------------------------------------------------------------------

/**
 * Self-attention of layer `layer` over a whole sequence. `xs[t]` is the (already normalized)
 * input at position t; returns the o_proj output at every position, causally masked.
 */
export function referenceAttention(m: ReferenceModel, layer: number, xs: Vec[]): Vec[] {
  const c = m.config;
  const p = `model.layers.${layer}.self_attn`;
  const nHeads = c.num_attention_heads;
  const nope = c.qk_nope_head_dim;
  const ropeDim = c.qk_rope_head_dim;
  const qkDim = nope + ropeDim;
  const vDim = c.v_head_dim;
  const eps = c.rms_norm_eps;

  // Per position and head: the full query [q_nope, rope(q_pe)], key [k_nope, rope(k_pe)] and value.
  const queries: Vec[][] = [];
  const keys: Vec[][] = [];
  const values: Vec[][] = [];
  xs.forEach((x, pos) => {
    const q =
      c.q_lora_rank === null
        ? linear(m.weight(`${p}.q_proj.weight`), x)
        : linear(m.weight(`${p}.q_b_proj.weight`), rmsNorm(linear(m.weight(`${p}.q_a_proj.weight`), x), m.weight(`${p}.q_a_layernorm.weight`), eps));

    const kvA = linear(m.weight(`${p}.kv_a_proj_with_mqa.weight`), x);
    const latent = kvA.slice(0, c.kv_lora_rank);
    const kPe = applyRope(kvA.slice(c.kv_lora_rank), pos, m.rope); // one rope key shared by all heads
    const kv = linear(m.weight(`${p}.kv_b_proj.weight`), rmsNorm(latent, m.weight(`${p}.kv_a_layernorm.weight`), eps));

    const qHeads: Vec[] = [];
    const kHeads: Vec[] = [];
    const vHeads: Vec[] = [];
    for (let h = 0; h < nHeads; h++) {
      const qHead = q.slice(h * qkDim, (h + 1) * qkDim);
      const query = new Float64Array(qkDim);
      query.set(qHead.slice(0, nope), 0);
      query.set(applyRope(qHead.slice(nope), pos, m.rope), nope);

      const kvHead = kv.slice(h * (nope + vDim), (h + 1) * (nope + vDim));
      const key = new Float64Array(qkDim);
      key.set(kvHead.slice(0, nope), 0);
      key.set(kPe, nope);

      qHeads.push(query);
      kHeads.push(key);
      vHeads.push(kvHead.slice(nope));
    }
    queries.push(qHeads);
    keys.push(kHeads);
    values.push(vHeads);
  });

  return xs.map((_, t) => {
    const heads = new Float64Array(nHeads * vDim);
    for (let h = 0; h < nHeads; h++) {
      // Scores against positions 0..t only (causal).
      const scores: number[] = [];
      for (let j = 0; j <= t; j++) {
        let dot = 0;
        for (let i = 0; i < qkDim; i++) dot += queries[t]![h]![i]! * keys[j]![h]![i]!;
        scores.push(dot * m.rope.softmaxScale);
      }
      const max = Math.max(...scores);
      const exps = scores.map((s) => Math.exp(s - max));
      const total = exps.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= t; j++) {
        const pj = exps[j]! / total;
        for (let i = 0; i < vDim; i++) heads[h * vDim + i] += pj * values[j]![h]![i]!;
      }
    }
    return linear(m.weight(`${p}.o_proj.weight`), heads);
  });
}

// ---------------------------------------------------------------------------------------------
// Feed-forward: dense MLP or MoE
// ---------------------------------------------------------------------------------------------

export function isMoeLayer(c: ReferenceConfig, layer: number): boolean {
  return c.n_routed_experts != null && c.n_routed_experts > 0 && layer >= c.first_k_dense_replace && layer % c.moe_layer_freq === 0;
}

/** Indices of the k largest values, largest first; equal values: lower index first. */
function topK(values: number[], k: number, allowed: (i: number) => boolean = () => true): number[] {
  return values
    .map((v, i) => ({ v, i }))
    .filter(({ i }) => allowed(i))
    .sort((a, b) => b.v - a.v || a.i - b.i)
    .slice(0, k)
    .map(({ i }) => i);
}

/**
 * The routed experts a token uses and their weights (sigmoid scoring, noaux_tc top-k):
 * group-limited choice by the bias-corrected scores, weights from the uncorrected ones.
 */
export function referenceRoute(m: ReferenceModel, layer: number, x: Vec): { experts: number[]; weights: number[] } {
  const c = m.config;
  const p = `model.layers.${layer}.mlp.gate`;
  const nExperts = c.n_routed_experts ?? 0;
  const scores = Array.from(linear(m.weight(`${p}.weight`), x), sigmoid);
  const bias = m.weight(`${p}.e_score_correction_bias`).data;
  const biased = scores.map((s, e) => s + bias[e]!);

  // Contiguous groups; a group's score is the sum of its two best corrected scores.
  const groupSize = nExperts / c.n_group;
  if (!Number.isInteger(groupSize)) throw new Error(`reference: ${nExperts} experts do not split into ${c.n_group} groups`);
  const groupScores = Array.from({ length: c.n_group }, (_, g) => {
    const inGroup = biased.slice(g * groupSize, (g + 1) * groupSize).sort((a, b) => b - a);
    return inGroup.slice(0, 2).reduce((a, b) => a + b, 0);
  });
  const keptGroups = new Set(topK(groupScores, c.topk_group));

  const experts = topK(biased, c.num_experts_per_tok, (e) => keptGroups.has(Math.floor(e / groupSize)));
  let weights = experts.map((e) => scores[e]!);
  if (c.norm_topk_prob) {
    const sum = weights.reduce((a, b) => a + b, 0) + 1e-20;
    weights = weights.map((w) => w / sum);
  }
  return { experts, weights: weights.map((w) => w * c.routed_scaling_factor) };
}

/** The feed-forward block of layer `layer` on one (already normalized) token vector. */
export function referenceFfn(m: ReferenceModel, layer: number, x: Vec): Vec {
  const prefix = `model.layers.${layer}.mlp`;
  if (!isMoeLayer(m.config, layer)) return swiglu(m, prefix, x);

  const { experts, weights } = referenceRoute(m, layer, x);
  let y = m.config.n_shared_experts > 0 ? swiglu(m, `${prefix}.shared_experts`, x) : new Float64Array(x.length);
  experts.forEach((e, j) => {
    const out = swiglu(m, `${prefix}.experts.${e}`, x);
    y = y.map((v, i) => v + weights[j]! * out[i]!);
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// Whole model
// ---------------------------------------------------------------------------------------------

/** The final hidden state (after model.norm) at every position. */
function finalHiddenStates(m: ReferenceModel, tokenIds: number[]): Vec[] {
  const c = m.config;
  const H = c.hidden_size;
  const eps = c.rms_norm_eps;
  const embed = m.weight('model.embed_tokens.weight');
  let xs: Vec[] = tokenIds.map((t) => {
    if (!Number.isInteger(t) || t < 0 || t >= c.vocab_size) throw new Error(`reference: token id ${t} outside the vocabulary of ${c.vocab_size}`);
    return embed.data.slice(t * H, (t + 1) * H);
  });
  // Only the main layers; model.layers.{num_hidden_layers}.* (multi-token prediction) is not used.
  for (let layer = 0; layer < c.num_hidden_layers; layer++) {
    const p = `model.layers.${layer}`;
    const attn = referenceAttention(m, layer, xs.map((x) => rmsNorm(x, m.weight(`${p}.input_layernorm.weight`), eps)));
    const hs = xs.map((x, t) => add(x, attn[t]!));
    xs = hs.map((h) => add(h, referenceFfn(m, layer, rmsNorm(h, m.weight(`${p}.post_attention_layernorm.weight`), eps))));
  }
  return xs.map((x) => rmsNorm(x, m.weight('model.norm.weight'), eps));
}

/** Logits at every position of `tokenIds` (full causal forward from position 0). */
export function referenceLogits(m: ReferenceModel, tokenIds: number[]): Float64Array[] {
  const head = m.weight('lm_head.weight');
  return finalHiddenStates(m, tokenIds).map((x) => linear(head, x));
}

/** Index of the largest value; the lowest index wins ties. */
function argmax(v: Float64Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/**
 * Greedy generation of `maxTokens` tokens, recomputing the whole sequence each step.
 * logits[i] is the distribution that chose tokenIds[i] (logits[0]: the last prompt position).
 */
export function referenceGreedy(m: ReferenceModel, promptTokenIds: number[], maxTokens: number): { tokenIds: number[]; logits: Float64Array[] } {
  if (promptTokenIds.length === 0) throw new Error('reference: empty prompt');
  const head = m.weight('lm_head.weight');
  const sequence = [...promptTokenIds];
  const tokenIds: number[] = [];
  const logits: Float64Array[] = [];
  for (let step = 0; step < maxTokens; step++) {
    const last = linear(head, finalHiddenStates(m, sequence).at(-1)!);
    const next = argmax(last);
    tokenIds.push(next);
    logits.push(last);
    sequence.push(next);
  }
  return { tokenIds, logits };
}
