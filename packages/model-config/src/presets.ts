/**
 * Small models of the DeepSeek-V3 architecture, written as the `config.json` a checkpoint would ship.
 * Each keeps the real model's structure (MLA, dense-then-MoE layers, grouped sigmoid routing,
 * a multi-token-prediction layer, YaRN) at widths this machine can run.
 */
export type PresetName = 'tiny' | 'demo' | 'bench' | 'r1-slice';
export const PRESET_NAMES: readonly PresetName[] = ['tiny', 'demo', 'bench', 'r1-slice'];

export interface Preset {
  readonly name: PresetName;
  readonly description: string;
  /** Whether the preset uses the real DeepSeek-V3 vocabulary and ships its tokenizer files. */
  readonly realTokenizer: boolean;
  /** Written as FP8 with 128×128 block scales unless asked otherwise, as the real checkpoint ships. */
  readonly fp8ByDefault?: boolean;
  readonly config: Readonly<Record<string, unknown>>;
}

const REAL_VOCAB_SIZE = 129280;

/** Keys every preset shares with the real DeepSeek-R1 config.json. */
const common = {
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 0,
  eos_token_id: 1,
  ep_size: 1,
  hidden_act: 'silu',
  initializer_range: 0.02,
  moe_layer_freq: 1,
  n_shared_experts: 1,
  norm_topk_prob: true,
  num_nextn_predict_layers: 1,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  tie_word_embeddings: false,
  topk_method: 'noaux_tc',
  torch_dtype: 'bfloat16',
  use_cache: true,
} as const;

const realYarn = {
  type: 'yarn',
  factor: 40,
  original_max_position_embeddings: 4096,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1.0,
  mscale_all_dim: 1.0,
} as const;

const presets: Record<PresetName, Preset> = {
  tiny: {
    name: 'tiny',
    description: 'tests: 3 layers (1 dense), 16 experts in 4 groups, vocabulary 512, under a few MB',
    realTokenizer: false,
    config: {
      ...common,
      vocab_size: 512,
      hidden_size: 64,
      intermediate_size: 96,
      moe_intermediate_size: 32,
      num_hidden_layers: 3,
      first_k_dense_replace: 1,
      num_attention_heads: 4,
      num_key_value_heads: 4,
      q_lora_rank: 48,
      kv_lora_rank: 32,
      qk_nope_head_dim: 16,
      qk_rope_head_dim: 8,
      v_head_dim: 16,
      n_routed_experts: 16,
      num_experts_per_tok: 4,
      n_group: 4,
      topk_group: 2,
      max_position_embeddings: 4096,
      // A short original context so tests can run prompts longer than it.
      rope_scaling: { ...realYarn, original_max_position_embeddings: 32 },
    },
  },
  demo: {
    name: 'demo',
    description: 'quick start: real DeepSeek-V3 tokenizer, 4 layers (1 dense), 64 experts, 8 chosen, 8 groups choosing 4',
    realTokenizer: true,
    config: {
      ...common,
      vocab_size: REAL_VOCAB_SIZE,
      hidden_size: 256,
      intermediate_size: 512,
      moe_intermediate_size: 64,
      num_hidden_layers: 4,
      first_k_dense_replace: 1,
      num_attention_heads: 8,
      num_key_value_heads: 8,
      q_lora_rank: 128,
      kv_lora_rank: 64,
      qk_nope_head_dim: 32,
      qk_rope_head_dim: 16,
      v_head_dim: 32,
      n_routed_experts: 64,
      num_experts_per_tok: 8,
      n_group: 8,
      topk_group: 4,
      max_position_embeddings: 163840,
      rope_scaling: realYarn,
    },
  },
  bench: {
    name: 'bench',
    description: 'benchmarks: 6 layers (1 dense), hidden 1024, 64 experts of width 512 (expert weights dominate)',
    realTokenizer: false,
    config: {
      ...common,
      vocab_size: 32768,
      hidden_size: 1024,
      intermediate_size: 2816,
      moe_intermediate_size: 512,
      num_hidden_layers: 6,
      first_k_dense_replace: 1,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      q_lora_rank: 384,
      kv_lora_rank: 256,
      qk_nope_head_dim: 64,
      qk_rope_head_dim: 32,
      v_head_dim: 64,
      n_routed_experts: 64,
      num_experts_per_tok: 8,
      n_group: 8,
      topk_group: 4,
      max_position_embeddings: 163840,
      rope_scaling: realYarn,
    },
  },
  'r1-slice': {
    name: 'r1-slice',
    description: 'every width of the real DeepSeek-R1 (hidden 7168, 128 heads, 256 experts of 2048, vocabulary 129280) in 2 layers (1 dense, 1 MoE), FP8 like the real checkpoint: ~16 GB',
    realTokenizer: true,
    fp8ByDefault: true,
    config: {
      ...common,
      vocab_size: REAL_VOCAB_SIZE,
      hidden_size: 7168,
      intermediate_size: 18432,
      moe_intermediate_size: 2048,
      num_hidden_layers: 2,
      first_k_dense_replace: 1,
      // The multi-token-prediction layer is left out (the engine does not use it): 12 GB less to write.
      num_nextn_predict_layers: 0,
      num_attention_heads: 128,
      num_key_value_heads: 128,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      n_routed_experts: 256,
      num_experts_per_tok: 8,
      n_group: 8,
      topk_group: 4,
      max_position_embeddings: 163840,
      rope_scaling: realYarn,
    },
  },
};

export function getPreset(name: string): Preset {
  if (!(PRESET_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown preset "${name}": choose one of ${PRESET_NAMES.join(', ')}`);
  }
  return presets[name as PresetName];
}
