import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readAllTensors, weightF64, type F64Tensor } from './safetensors-f64.js';

/**
 * DeepSeek-V3 in float64, written the plain way (naive MLA with full keys and values, no cache,
 * no batching): the spec the engine is checked against. Shares no code with the project.
 */
type Vec = Float64Array;

interface RawConfig {
  hidden_size: number;
  vocab_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  q_lora_rank: number | null;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  n_routed_experts: number;
  n_shared_experts: number;
  num_experts_per_tok: number;
  n_group: number;
  topk_group: number;
  norm_topk_prob: boolean;
  routed_scaling_factor: number;
  first_k_dense_replace: number;
  moe_layer_freq: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: null | { factor: number; original_max_position_embeddings: number; beta_fast: number; beta_slow: number; mscale: number; mscale_all_dim: number };
  quantization_config?: { weight_block_size: [number, number] };
}

export interface ReferenceModel {
  readonly config: RawConfig;
  readonly w: (name: string) => F64Tensor;
  readonly invFreq: number[];
  readonly ropeScale: number;
  readonly softmaxScale: number;
}

export function loadReferenceModel(dir: string): ReferenceModel {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RawConfig;
  const tensors = readAllTensors(dir);
  const block = config.quantization_config?.weight_block_size ?? null;
  const cache = new Map<string, F64Tensor>();
  const w = (name: string): F64Tensor => {
    let t = cache.get(name);
    if (!t) cache.set(name, (t = weightF64(tensors, name, block)));
    return t;
  };
  const d = config.qk_rope_head_dim;
  const base = config.rope_theta;
  const invFreq: number[] = [];
  for (let i = 0; i < d / 2; i++) invFreq.push(1 / Math.pow(base, (2 * i) / d));
  let ropeScale = 1;
  let softmaxScale = 1 / Math.sqrt(config.qk_nope_head_dim + d);
  const rs = config.rope_scaling;
  if (rs) {
    const mscale = (s: number, m: number): number => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
    const corr = (rot: number): number => (d * Math.log(rs.original_max_position_embeddings / (rot * 2 * Math.PI))) / (2 * Math.log(base));
    const low = Math.max(Math.floor(corr(rs.beta_fast)), 0);
    let high = Math.min(Math.ceil(corr(rs.beta_slow)), d - 1);
    if (low === high) high += 0.001;
    for (let i = 0; i < d / 2; i++) {
      const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
      const extraMask = 1 - ramp;
      invFreq[i] = (invFreq[i]! / rs.factor) * (1 - extraMask) + invFreq[i]! * extraMask;
    }
    ropeScale = mscale(rs.factor, rs.mscale) / mscale(rs.factor, rs.mscale_all_dim);
    const m = mscale(rs.factor, rs.mscale_all_dim);
    softmaxScale *= m * m;
  }
  return { config, w, invFreq, ropeScale, softmaxScale };
}

/** y = W x for W [out, in]. */
function matvec(W: F64Tensor, x: Vec): Vec {
  const [out, inn] = W.shape as [number, number];
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < inn; i++) s += W.data[o * inn + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: Vec, w: F64Tensor, eps: number): Vec {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w.data[i]!);
}

const silu = (z: number): number => z / (1 + Math.exp(-z));
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

function mlp(m: ReferenceModel, prefix: string, x: Vec): Vec {
  const g = matvec(m.w(`${prefix}.gate_proj.weight`), x);
  const u = matvec(m.w(`${prefix}.up_proj.weight`), x);
  return matvec(m.w(`${prefix}.down_proj.weight`), g.map((v, i) => silu(v) * u[i]!));
}

/** Rotates interleaved pairs (x[2i], x[2i+1]) by pos·invFreq[i], cos/sin scaled by YaRN's factor. */
function rope(m: ReferenceModel, x: Vec, pos: number): Vec {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length / 2; i++) {
    const c = Math.cos(pos * m.invFreq[i]!) * m.ropeScale;
    const s = Math.sin(pos * m.invFreq[i]!) * m.ropeScale;
    const a = x[2 * i]!;
    const b = x[2 * i + 1]!;
    y[2 * i] = a * c - b * s;
    y[2 * i + 1] = a * s + b * c;
  }
  return y;
}

function attention(m: ReferenceModel, layer: number, xs: Vec[]): Vec[] {
  const c = m.config;
  const p = `model.layers.${layer}.self_attn`;
  const nH = c.num_attention_heads;
  const nope = c.qk_nope_head_dim;
  const rd = c.qk_rope_head_dim;
  const qk = nope + rd;
  const vd = c.v_head_dim;
  const eps = c.rms_norm_eps;
  const qs: Vec[][] = [];
  const ks: Vec[][] = [];
  const vs: Vec[][] = [];
  xs.forEach((x, pos) => {
    const q = c.q_lora_rank === null ? matvec(m.w(`${p}.q_proj.weight`), x) : matvec(m.w(`${p}.q_b_proj.weight`), rmsNorm(matvec(m.w(`${p}.q_a_proj.weight`), x), m.w(`${p}.q_a_layernorm.weight`), eps));
    const kvA = matvec(m.w(`${p}.kv_a_proj_with_mqa.weight`), x);
    const latent = rmsNorm(kvA.slice(0, c.kv_lora_rank), m.w(`${p}.kv_a_layernorm.weight`), eps);
    const kPe = rope(m, kvA.slice(c.kv_lora_rank), pos);
    const kv = matvec(m.w(`${p}.kv_b_proj.weight`), latent);
    const qh: Vec[] = [];
    const kh: Vec[] = [];
    const vh: Vec[] = [];
    for (let h = 0; h < nH; h++) {
      const qHead = q.slice(h * qk, (h + 1) * qk);
      const qFull = new Float64Array(qk);
      qFull.set(qHead.slice(0, nope));
      qFull.set(rope(m, qHead.slice(nope), pos), nope);
      const kvHead = kv.slice(h * (nope + vd), (h + 1) * (nope + vd));
      const kFull = new Float64Array(qk);
      kFull.set(kvHead.slice(0, nope));
      kFull.set(kPe, nope);
      qh.push(qFull);
      kh.push(kFull);
      vh.push(kvHead.slice(nope));
    }
    qs.push(qh);
    ks.push(kh);
    vs.push(vh);
  });
  return xs.map((_, t) => {
    const out = new Float64Array(nH * vd);
    for (let h = 0; h < nH; h++) {
      const scores = [];
      for (let j = 0; j <= t; j++) {
        let s = 0;
        for (let i = 0; i < qk; i++) s += qs[t]![h]![i]! * ks[j]![h]![i]!;
        scores.push(s * m.softmaxScale);
      }
      const mx = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - mx));
      const z = e.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= t; j++) for (let i = 0; i < vd; i++) out[h * vd + i] += (e[j]! / z) * vs[j]![h]![i]!;
    }
    return matvec(m.w(`${p}.o_proj.weight`), out);
  });
}

/** The experts a token uses and their weights (noaux_tc). Exported for the reference's own tests. */
export function referenceRoute(m: ReferenceModel, layer: number, x: Vec): { experts: number[]; weights: number[] } {
  const c = m.config;
  const p = `model.layers.${layer}.mlp.gate`;
  const s = Array.from(matvec(m.w(`${p}.weight`), x), sigmoid);
  const bias = m.w(`${p}.e_score_correction_bias`).data;
  const biased = s.map((v, i) => v + bias[i]!);
  const size = c.n_routed_experts / c.n_group;
  const groupScores = Array.from({ length: c.n_group }, (_, g) => {
    const vals = biased.slice(g * size, (g + 1) * size).sort((a, b) => b - a);
    return vals[0]! + vals[1]!;
  });
  const groups = groupScores.map((v, g) => [v, g] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, c.topk_group).map(([, g]) => g);
  const candidates = biased.map((v, e) => [v, e] as const).filter(([, e]) => groups.includes(Math.floor(e / size)));
  const experts = candidates.sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, c.num_experts_per_tok).map(([, e]) => e);
  let weights = experts.map((e) => s[e]!);
  if (c.norm_topk_prob) {
    const sum = weights.reduce((a, b) => a + b, 0) + 1e-20;
    weights = weights.map((w) => w / sum);
  }
  return { experts, weights: weights.map((w) => w * c.routed_scaling_factor) };
}

function ffn(m: ReferenceModel, layer: number, x: Vec): Vec {
  const c = m.config;
  const prefix = `model.layers.${layer}.mlp`;
  const isMoe = c.n_routed_experts > 0 && layer >= c.first_k_dense_replace && layer % c.moe_layer_freq === 0;
  if (!isMoe) return mlp(m, prefix, x);
  const { experts, weights } = referenceRoute(m, layer, x);
  const y = c.n_shared_experts > 0 ? mlp(m, `${prefix}.shared_experts`, x) : new Float64Array(x.length);
  experts.forEach((e, j) => {
    const out = mlp(m, `${prefix}.experts.${e}`, x);
    for (let i = 0; i < y.length; i++) y[i] += weights[j]! * out[i]!;
  });
  return y;
}

/** Logits at every position of `tokenIds`. */
export function referenceLogits(m: ReferenceModel, tokenIds: number[]): Float64Array[] {
  const c = m.config;
  const H = c.hidden_size;
  const emb = m.w('model.embed_tokens.weight');
  let xs = tokenIds.map((t) => emb.data.slice(t * H, (t + 1) * H));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const attn = attention(m, l, xs.map((x) => rmsNorm(x, m.w(`${p}.input_layernorm.weight`), c.rms_norm_eps)));
    const hs = xs.map((x, t) => x.map((v, i) => v + attn[t]![i]!));
    xs = hs.map((h) => {
      const f = ffn(m, l, rmsNorm(h, m.w(`${p}.post_attention_layernorm.weight`), c.rms_norm_eps));
      return h.map((v, i) => v + f[i]!);
    });
  }
  return xs.map((x) => matvec(m.w('lm_head.weight'), rmsNorm(x, m.w('model.norm.weight'), c.rms_norm_eps)));
}

export function referenceGreedy(m: ReferenceModel, promptTokenIds: number[], maxTokens: number): { tokenIds: number[]; logits: Float64Array[] } {
  const tokens = [...promptTokenIds];
  const tokenIds: number[] = [];
  const logits: Float64Array[] = [];
  for (let i = 0; i < maxTokens; i++) {
    const last = referenceLogits(m, tokens).at(-1)!;
    let best = 0;
    for (let v = 1; v < last.length; v++) if (last[v]! > last[best]!) best = v;
    tokenIds.push(best);
    logits.push(last);
    tokens.push(best);
  }
  return { tokenIds, logits };
}
