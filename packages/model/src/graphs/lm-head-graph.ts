import type { ModelConfig } from '@expertmesh/model-config';
import { linear, OnnxModelBuilder, rmsNorm, type BuiltModel, type WeightData } from '@expertmesh/tensor-ops';

/**
 * logits = W_lm · RMSNorm(x), only for the rows that need a next token. A stored (BF16/FP8) head is
 * widened a chunk of vocabulary rows at a time (see `linear`), never as a whole.
 */
export function buildLmHeadGraph(config: ModelConfig, finalNorm: Float32Array, lmHead: WeightData): BuiltModel {
  const b = new OnnxModelBuilder('lm_head');
  const x = b.input('x', 'float32', ['N', config.hiddenSize]);
  const xn = rmsNorm(b, x, finalNorm, config.rmsNormEps, 'final_norm');
  b.alias(linear(b, xn, lmHead, 'lm_head'), 'logits');
  b.output('logits', 'float32', ['N', config.vocabSize]);
  return b.build();
}
