import type { ModelConfig } from '@expertmesh/model-config';
import { linear, OnnxModelBuilder, rmsNorm, type BuiltModel } from '@expertmesh/tensor-ops';
import type { AttentionWeights } from '@expertmesh/model-weights';
import { applyInterleavedRope } from './rotary.js';
import { splitKvB } from './kv-b-split.js';

/**
 * MLA up to the attention scores, in the weight-absorbed form that lets the cache hold only the
 * compressed latent:
 *   xn = RMSNorm(x); q = W_qb·RMSNorm(W_qa·xn) (or W_q·xn); [q_nope, q_pe] = q per head
 *   q_latent[h] = q_nope[h] · W_kb[h]            (absorbs the key up-projection into the query)
 *   [c, k_pe] = W_kva·xn; c = RMSNorm(c); rope on q_pe and k_pe
 * Outputs  q = [q_latent, rope(q_pe)] · softmax_scale : [T, heads, kv_lora_rank + rope]
 *          kv = [c, rope(k_pe)]                        : [T, kv_lora_rank + rope]  (the cache row)
 * Inputs x [T, hidden], cos/sin [T, rope/2] for each token's position.
 */
export function buildAttentionInputGraph(config: ModelConfig, w: AttentionWeights, softmaxScale: number, layer: number): BuiltModel {
  const { hiddenSize: H, numHeads: nH, qkNopeHeadDim: nope, qkRopeHeadDim: rope, qkHeadDim, kvLoraRank: R, rmsNormEps: eps } = config;
  const b = new OnnxModelBuilder(`layer${layer}_attention_input`);
  const x = b.input('x', 'float32', ['T', H]);
  const cos = b.input('cos', 'float32', ['T', rope / 2]);
  const sin = b.input('sin', 'float32', ['T', rope / 2]);

  const xn = rmsNorm(b, x, w.inputNorm, eps, 'input_norm');
  const qFlat =
    w.q.kind === 'full'
      ? linear(b, xn, w.q.proj, 'q_proj')
      : linear(b, rmsNorm(b, linear(b, xn, w.q.a, 'q_a_proj'), w.q.norm, eps, 'q_a_norm'), w.q.b, 'q_b_proj');
  const q = b.op('Reshape', [qFlat, b.int64s([-1, nH, qkHeadDim])]);
  const [qNope, qPe] = b.opMulti('Split', [q, b.int64s([nope, rope])], { axis: 2 }, { outputs: 2 });

  const { keyUp } = splitKvB(b, config, w.kvB);
  const qNopeByHead = b.op('Transpose', [qNope!], { perm: [1, 0, 2] }); // [nH, T, nope]
  const qLatentByHead = b.op('MatMul', [qNopeByHead, keyUp]); // [nH, T, R]
  const qLatent = b.op('Transpose', [qLatentByHead], { perm: [1, 0, 2] });
  const qRoped = applyInterleavedRope(b, qPe!, nH, rope, cos, sin);
  const qOut = b.op('Mul', [b.op('Concat', [qLatent, qRoped], { axis: 2 }), b.scalarFloat(softmaxScale)]);
  b.alias(qOut, 'q');
  b.output('q', 'float32', ['T', nH, R + rope]);

  const kvA = linear(b, xn, w.kvA, 'kv_a_proj');
  const [c, kPe] = b.opMulti('Split', [kvA, b.int64s([R, rope])], { axis: 1 }, { outputs: 2 });
  const cNormed = rmsNorm(b, c!, w.kvANorm, eps, 'kv_a_norm');
  const kPeRoped = b.op('Reshape', [applyInterleavedRope(b, kPe!, 1, rope, cos, sin), b.int64s([-1, rope])]);
  b.alias(b.op('Concat', [cNormed, kPeRoped], { axis: 1 }), 'kv');
  b.output('kv', 'float32', ['T', R + rope]);
  return b.build();
}
