import type { ModelConfig } from '@expertmesh/model-config';
import { linear, OnnxModelBuilder, rmsNorm } from '@expertmesh/tensor-ops';

/** logits = W_lm · RMSNorm(x), only for the rows that need a next token. */
export function buildLmHeadGraph(config: ModelConfig, finalNorm: Float32Array, lmHead: Float32Array): Uint8Array {
  const b = new OnnxModelBuilder('lm_head');
  const x = b.input('x', 'float32', ['N', config.hiddenSize]);
  const xn = rmsNorm(b, x, finalNorm, config.rmsNormEps, 'final_norm');
  b.alias(linear(b, xn, lmHead, config.vocabSize, config.hiddenSize, 'lm_head'), 'logits');
  b.output('logits', 'float32', ['N', config.vocabSize]);
  return b.toBytes();
}
