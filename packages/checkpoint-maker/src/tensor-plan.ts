import { isMoeLayer, type ModelConfig } from '@expertmesh/model-config';

/** How a tensor is initialised and stored. */
export type TensorRole =
  /** A projection [out, in]: FP8 with block scales in an FP8 checkpoint. */
  | 'linear'
  /** An RMSNorm weight. */
  | 'norm'
  | 'embedding'
  /** The LM head: a projection that stays in the checkpoint dtype (not FP8), as DeepSeek ships it. */
  | 'head'
  /** The router's weight [experts, hidden]: kept in the checkpoint dtype even in FP8 checkpoints, as DeepSeek ships it. */
  | 'router'
  /** e_score_correction_bias: float32 in the real checkpoint. */
  | 'bias';

export interface PlannedTensor {
  readonly name: string;
  readonly shape: readonly [number] | readonly [number, number];
  readonly role: TensorRole;
}

/**
 * Every tensor of a DeepSeek-V3 checkpoint for `config`, with the names and shapes the real
 * checkpoint uses, including the multi-token-prediction layer after the main ones.
 */
export function planTensors(config: ModelConfig): PlannedTensor[] {
  const c = config;
  const H = c.hiddenSize;
  const out: PlannedTensor[] = [];
  const add = (name: string, shape: PlannedTensor['shape'], role: TensorRole): void => {
    out.push({ name, shape, role });
  };
  const mlp = (prefix: string, inter: number): void => {
    add(`${prefix}.gate_proj.weight`, [inter, H], 'linear');
    add(`${prefix}.up_proj.weight`, [inter, H], 'linear');
    add(`${prefix}.down_proj.weight`, [H, inter], 'linear');
  };
  const layer = (l: number): void => {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H], 'norm');
    add(`${p}.post_attention_layernorm.weight`, [H], 'norm');
    const a = `${p}.self_attn`;
    if (c.qLoraRank === null) {
      add(`${a}.q_proj.weight`, [c.numHeads * c.qkHeadDim, H], 'linear');
    } else {
      add(`${a}.q_a_proj.weight`, [c.qLoraRank, H], 'linear');
      add(`${a}.q_a_layernorm.weight`, [c.qLoraRank], 'norm');
      add(`${a}.q_b_proj.weight`, [c.numHeads * c.qkHeadDim, c.qLoraRank], 'linear');
    }
    add(`${a}.kv_a_proj_with_mqa.weight`, [c.kvLoraRank + c.qkRopeHeadDim, H], 'linear');
    add(`${a}.kv_a_layernorm.weight`, [c.kvLoraRank], 'norm');
    add(`${a}.kv_b_proj.weight`, [c.numHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank], 'linear');
    add(`${a}.o_proj.weight`, [H, c.numHeads * c.vHeadDim], 'linear');
    // The MTP layer is always a MoE layer in DeepSeek-V3.
    if (isMoeLayer(c, l) || l >= c.numLayers) {
      add(`${p}.mlp.gate.weight`, [c.nRoutedExperts, H], 'router');
      add(`${p}.mlp.gate.e_score_correction_bias`, [c.nRoutedExperts], 'bias');
      for (let e = 0; e < c.nRoutedExperts; e++) mlp(`${p}.mlp.experts.${e}`, c.moeIntermediateSize);
      if (c.nSharedExperts > 0) mlp(`${p}.mlp.shared_experts`, c.moeIntermediateSize * c.nSharedExperts);
    } else {
      mlp(`${p}.mlp`, c.intermediateSize);
    }
  };

  add('model.embed_tokens.weight', [c.vocabSize, H], 'embedding');
  for (let l = 0; l < c.numLayers; l++) layer(l);
  for (let m = 0; m < c.numNextnPredictLayers; m++) {
    const l = c.numLayers + m;
    const p = `model.layers.${l}`;
    add(`${p}.embed_tokens.weight`, [c.vocabSize, H], 'embedding');
    add(`${p}.enorm.weight`, [H], 'norm');
    add(`${p}.hnorm.weight`, [H], 'norm');
    add(`${p}.eh_proj.weight`, [H, 2 * H], 'linear');
    layer(l);
    add(`${p}.shared_head.norm.weight`, [H], 'norm');
    add(`${p}.shared_head.head.weight`, [c.vocabSize, H], 'head');
  }
  add('model.norm.weight', [H], 'norm');
  add('lm_head.weight', [c.vocabSize, H], 'head');
  return out;
}
