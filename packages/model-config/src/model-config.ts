import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelConfigError } from './errors.js';
import { hfDeepseekV3ConfigSchema, type HfDeepseekV3Config } from './hf-config-schema.js';

export interface YarnScaling {
  readonly factor: number;
  readonly originalMaxPositionEmbeddings: number;
  readonly betaFast: number;
  readonly betaSlow: number;
  readonly mscale: number;
  readonly mscaleAllDim: number;
}

export interface Fp8Quantization {
  readonly format: 'e4m3';
  /** [rows, cols] of one scale block of `weight_scale_inv`. */
  readonly weightBlockSize: readonly [number, number];
}

/** What the engine needs from config.json, named as the math names it. */
export interface ModelConfig {
  readonly modelType: 'deepseek_v3' | 'deepseek_v2';
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  /** Multi-token-prediction layers stored after the main layers; the engine ignores them. */
  readonly numNextnPredictLayers: number;
  readonly numHeads: number;
  readonly qLoraRank: number | null;
  readonly kvLoraRank: number;
  readonly qkNopeHeadDim: number;
  readonly qkRopeHeadDim: number;
  readonly qkHeadDim: number;
  readonly vHeadDim: number;
  readonly intermediateSize: number;
  readonly moeIntermediateSize: number;
  readonly nRoutedExperts: number;
  readonly nSharedExperts: number;
  readonly numExpertsPerTok: number;
  readonly nGroup: number;
  readonly topkGroup: number;
  readonly normTopkProb: boolean;
  readonly routedScalingFactor: number;
  readonly firstKDenseReplace: number;
  readonly moeLayerFreq: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly ropeScaling: YarnScaling | null;
  readonly maxPositionEmbeddings: number;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  readonly torchDtype: 'bfloat16' | 'float16' | 'float32';
  readonly quantization: Fp8Quantization | null;
  /** Layer indices (0-based) whose FFN is a mixture of experts. */
  readonly moeLayers: readonly number[];
  /** The original JSON, for writing the config back out unchanged. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** HF rule: routed experts replace the dense MLP from `first_k_dense_replace` on, every `moe_layer_freq` layers. */
export function isMoeLayer(config: Pick<ModelConfig, 'nRoutedExperts' | 'firstKDenseReplace' | 'moeLayerFreq'>, layer: number): boolean {
  return config.nRoutedExperts > 0 && layer >= config.firstKDenseReplace && layer % config.moeLayerFreq === 0;
}

export function parseModelConfig(json: unknown, source = 'config.json'): ModelConfig {
  const parsed = hfDeepseekV3ConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ModelConfigError('not a DeepSeek-V3 config this engine can run; fix or remove these keys', source, issues);
  }
  const hf = parsed.data;
  checkConsistency(hf, source);
  return toModelConfig(hf);
}

export async function loadModelConfig(modelDir: string): Promise<ModelConfig> {
  const path = join(modelDir, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new ModelConfigError(`cannot read the model's config.json (${(cause as Error).message}); is --model a checkpoint folder?`, path);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ModelConfigError(`is not valid JSON (${(cause as Error).message})`, path);
  }
  return parseModelConfig(json, path);
}

function checkConsistency(hf: HfDeepseekV3Config, source: string): void {
  const problems: string[] = [];
  const experts = hf.n_routed_experts ?? 0;
  if (experts > 0) {
    if (hf.num_experts_per_tok === null) problems.push('num_experts_per_tok is required when n_routed_experts is set');
    if (experts % hf.n_group !== 0) problems.push(`n_routed_experts (${experts}) must be a multiple of n_group (${hf.n_group})`);
    if (hf.topk_group > hf.n_group) problems.push(`topk_group (${hf.topk_group}) exceeds n_group (${hf.n_group})`);
    const reachable = (experts / hf.n_group) * hf.topk_group;
    if ((hf.num_experts_per_tok ?? 0) > reachable)
      problems.push(`num_experts_per_tok (${hf.num_experts_per_tok}) exceeds the experts in topk_group groups (${reachable})`);
    if (experts / hf.n_group < 2) problems.push('each expert group needs at least 2 experts (group score = sum of its top 2)');
  }
  if (hf.qk_rope_head_dim % 2 !== 0) problems.push(`qk_rope_head_dim (${hf.qk_rope_head_dim}) must be even for rotary pairs`);
  if (hf.num_key_value_heads !== undefined && hf.num_key_value_heads !== hf.num_attention_heads)
    problems.push('MLA has as many key/value heads as query heads: num_key_value_heads must equal num_attention_heads');
  if (hf.first_k_dense_replace > hf.num_hidden_layers)
    problems.push(`first_k_dense_replace (${hf.first_k_dense_replace}) exceeds num_hidden_layers (${hf.num_hidden_layers})`);
  if (problems.length) throw new ModelConfigError('inconsistent model dimensions', source, problems);
}

function toModelConfig(hf: HfDeepseekV3Config): ModelConfig {
  const base = {
    nRoutedExperts: hf.n_routed_experts ?? 0,
    firstKDenseReplace: hf.first_k_dense_replace,
    moeLayerFreq: hf.moe_layer_freq,
  };
  const moeLayers = Array.from({ length: hf.num_hidden_layers }, (_, i) => i).filter((i) => isMoeLayer(base, i));
  const eos = hf.eos_token_id;
  return {
    ...base,
    modelType: hf.model_type,
    vocabSize: hf.vocab_size,
    hiddenSize: hf.hidden_size,
    numLayers: hf.num_hidden_layers,
    numNextnPredictLayers: hf.num_nextn_predict_layers,
    numHeads: hf.num_attention_heads,
    qLoraRank: hf.q_lora_rank,
    kvLoraRank: hf.kv_lora_rank,
    qkNopeHeadDim: hf.qk_nope_head_dim,
    qkRopeHeadDim: hf.qk_rope_head_dim,
    qkHeadDim: hf.qk_nope_head_dim + hf.qk_rope_head_dim,
    vHeadDim: hf.v_head_dim,
    intermediateSize: hf.intermediate_size,
    moeIntermediateSize: hf.moe_intermediate_size,
    nSharedExperts: hf.n_shared_experts ?? 0,
    numExpertsPerTok: hf.num_experts_per_tok ?? 0,
    nGroup: hf.n_group,
    topkGroup: hf.topk_group,
    normTopkProb: hf.norm_topk_prob,
    routedScalingFactor: hf.routed_scaling_factor,
    rmsNormEps: hf.rms_norm_eps,
    ropeTheta: hf.rope_theta,
    ropeScaling: hf.rope_scaling
      ? {
          factor: hf.rope_scaling.factor,
          originalMaxPositionEmbeddings: hf.rope_scaling.original_max_position_embeddings,
          betaFast: hf.rope_scaling.beta_fast,
          betaSlow: hf.rope_scaling.beta_slow,
          mscale: hf.rope_scaling.mscale,
          mscaleAllDim: hf.rope_scaling.mscale_all_dim,
        }
      : null,
    maxPositionEmbeddings: hf.max_position_embeddings,
    bosTokenId: hf.bos_token_id,
    eosTokenIds: eos === null ? [] : Array.isArray(eos) ? eos : [eos],
    torchDtype: hf.torch_dtype,
    quantization: hf.quantization_config
      ? { format: 'e4m3', weightBlockSize: hf.quantization_config.weight_block_size }
      : null,
    moeLayers,
    raw: hf as Record<string, unknown>,
  };
}
