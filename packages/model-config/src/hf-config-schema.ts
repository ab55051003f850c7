import { z } from 'zod';

/**
 * The keys of a Hugging Face `config.json` for DeepSeek-V3 / R1 that change the computation.
 * Keys that do not (auto_map, initializer_range, transformers_version, …) pass through untouched,
 * so the real checkpoint's file parses as it ships.
 */
const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

export const yarnRopeScalingSchema = z.object({
  type: z.literal('yarn'),
  factor: z.number().positive(),
  original_max_position_embeddings: positiveInt,
  beta_fast: z.number().positive().default(32),
  beta_slow: z.number().positive().default(1),
  mscale: z.number().default(1),
  mscale_all_dim: z.number().default(0),
});

export const fp8QuantizationSchema = z.object({
  quant_method: z.literal('fp8'),
  fmt: z.literal('e4m3'),
  activation_scheme: z.enum(['dynamic', 'static']).default('dynamic'),
  weight_block_size: z.tuple([positiveInt, positiveInt]),
});

export const hfDeepseekV3ConfigSchema = z
  .object({
    architectures: z.array(z.string()).optional(),
    model_type: z.enum(['deepseek_v3', 'deepseek_v2']),
    vocab_size: positiveInt,
    hidden_size: positiveInt,
    intermediate_size: positiveInt,
    moe_intermediate_size: positiveInt,
    num_hidden_layers: positiveInt,
    num_nextn_predict_layers: nonNegativeInt.default(0),
    num_attention_heads: positiveInt,
    num_key_value_heads: positiveInt.optional(),
    n_shared_experts: nonNegativeInt.nullable(),
    n_routed_experts: positiveInt.nullable(),
    num_experts_per_tok: positiveInt.nullable(),
    routed_scaling_factor: z.number().positive(),
    n_group: positiveInt,
    topk_group: positiveInt,
    topk_method: z.literal('noaux_tc'),
    scoring_func: z.literal('sigmoid'),
    norm_topk_prob: z.boolean(),
    first_k_dense_replace: nonNegativeInt,
    moe_layer_freq: positiveInt,
    q_lora_rank: positiveInt.nullable(),
    kv_lora_rank: positiveInt,
    qk_nope_head_dim: positiveInt,
    qk_rope_head_dim: positiveInt,
    v_head_dim: positiveInt,
    hidden_act: z.literal('silu'),
    max_position_embeddings: positiveInt,
    rms_norm_eps: z.number().positive(),
    rope_theta: z.number().positive(),
    rope_scaling: yarnRopeScalingSchema.nullable().default(null),
    attention_bias: z.literal(false).default(false),
    tie_word_embeddings: z.literal(false).default(false),
    bos_token_id: nonNegativeInt.nullable().default(null),
    eos_token_id: z.union([nonNegativeInt, z.array(nonNegativeInt)]).nullable().default(null),
    torch_dtype: z.enum(['bfloat16', 'float16', 'float32']).default('bfloat16'),
    quantization_config: fp8QuantizationSchema.optional(),
  })
  .passthrough();

export type HfDeepseekV3Config = z.infer<typeof hfDeepseekV3ConfigSchema>;
