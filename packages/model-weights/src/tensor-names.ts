/** Tensor names exactly as deepseek-ai/DeepSeek-V3 and DeepSeek-R1 ship them on Hugging Face. */
export const EMBED_TOKENS = 'model.embed_tokens.weight';
export const FINAL_NORM = 'model.norm.weight';
export const LM_HEAD = 'lm_head.weight';

export const layerPrefix = (layer: number): string => `model.layers.${layer}`;

export const attentionNames = (layer: number) => {
  const p = `${layerPrefix(layer)}.self_attn`;
  return {
    qProj: `${p}.q_proj.weight`,
    qAProj: `${p}.q_a_proj.weight`,
    qANorm: `${p}.q_a_layernorm.weight`,
    qBProj: `${p}.q_b_proj.weight`,
    kvAProj: `${p}.kv_a_proj_with_mqa.weight`,
    kvANorm: `${p}.kv_a_layernorm.weight`,
    kvBProj: `${p}.kv_b_proj.weight`,
    oProj: `${p}.o_proj.weight`,
  };
};

export const layerNormNames = (layer: number) => ({
  input: `${layerPrefix(layer)}.input_layernorm.weight`,
  postAttention: `${layerPrefix(layer)}.post_attention_layernorm.weight`,
});

export const mlpNames = (prefix: string) => ({
  gate: `${prefix}.gate_proj.weight`,
  up: `${prefix}.up_proj.weight`,
  down: `${prefix}.down_proj.weight`,
});

export const denseMlpPrefix = (layer: number): string => `${layerPrefix(layer)}.mlp`;
export const sharedExpertsPrefix = (layer: number): string => `${layerPrefix(layer)}.mlp.shared_experts`;
export const routedExpertPrefix = (layer: number, expert: number): string => `${layerPrefix(layer)}.mlp.experts.${expert}`;

export const routerNames = (layer: number) => ({
  gate: `${layerPrefix(layer)}.mlp.gate.weight`,
  scoreCorrectionBias: `${layerPrefix(layer)}.mlp.gate.e_score_correction_bias`,
});
