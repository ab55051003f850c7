import type { ModelConfig } from '@expertmesh/model-config';
import { linear, OnnxModelBuilder, rmsNorm, type BuiltModel, type WeightData } from '@expertmesh/tensor-ops';

/**
 * logits = W_lm · RMSNorm(x), only for the rows that need a next token; and each row's argmax (the
 * greedy token, lowest index on ties), so greedy decoding need not scan the vocabulary in JavaScript.
 * A stored (BF16/FP8) head is widened a chunk of vocabulary rows at a time (see `linear`), never as a whole.
 */
export function buildLmHeadGraph(config: ModelConfig, finalNorm: Float32Array, lmHead: WeightData): BuiltModel {
  const b = new OnnxModelBuilder('lm_head');
  const x = b.input('x', 'float32', ['N', config.hiddenSize]);
  const xn = rmsNorm(b, x, finalNorm, config.rmsNormEps, 'final_norm');
  const logits = linear(b, xn, lmHead, 'lm_head');
  b.alias(logits, 'logits');
  b.alias(b.op('Cast', [b.op('ArgMax', [logits], { axis: 1, keepdims: 0, select_last_index: 0 })], { to: 6 }), 'argmax');
  b.output('logits', 'float32', ['N', config.vocabSize]);
  b.output('argmax', 'int32', ['N']);
  return b.build();
}
