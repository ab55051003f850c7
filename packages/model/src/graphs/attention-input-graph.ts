import type { ModelConfig } from '@expertmesh/model-config';
import { linear, rmsNorm, type OnnxModelBuilder } from '@expertmesh/tensor-ops';
import type { AttentionWeights } from '@expertmesh/model-weights';
import { applyInterleavedRope } from './rotary.js';

/**
 * MLA up to the attention scores, in the weight-absorbed form that lets the cache hold only the
 * compressed latent:
 *   xn = RMSNorm(x); q = W_qb·RMSNorm(W_qa·xn) (or W_q·xn); [q_nope, q_pe] = q per head
 *   q_latent[h] = q_nope[h] · W_kb[h]            (absorbs the key up-projection into the query)
 *   [c, k_pe] = W_kva·xn; c = RMSNorm(c); rope on q_pe and k_pe
 * Returns  q = [q_latent, rope(q_pe)] · softmax_scale : [T, heads, kv_lora_rank + rope]
 *          kv = [c, rope(k_pe)]                        : [T, kv_lora_rank + rope]  (the cache row)
 * for x [T, hidden] and cos/sin [T, rope/2] of each token's position; keyUp from `splitKvB`.
 */
export function appendAttentionInput(
  b: OnnxModelBuilder,
  config: ModelConfig,
  w: AttentionWeights,
  softmaxScale: number,
  keyUp: string,
  inputs: { x: string; cos: string; sin: string },
): { q: string; kv: string } {
  const { numHeads: nH, qkNopeHeadDim: nope, qkRopeHeadDim: rope, qkHeadDim, kvLoraRank: R, rmsNormEps: eps } = config;
  const { x, cos, sin } = inputs;
  const xn = rmsNorm(b, x, w.inputNorm, eps, 'input_norm');
  const qFlat =
    w.q.kind === 'full'
      ? linear(b, xn, w.q.proj, 'q_proj')
      : linear(b, rmsNorm(b, linear(b, xn, w.q.a, 'q_a_proj'), w.q.norm, eps, 'q_a_norm'), w.q.b, 'q_b_proj');
  const q = b.op('Reshape', [qFlat, b.int64s([-1, nH, qkHeadDim])]);
  const [qNope, qPe] = b.opMulti('Split', [q, b.int64s([nope, rope])], { axis: 2 }, { outputs: 2 });

  const qNopeByHead = b.op('Transpose', [qNope!], { perm: [1, 0, 2] }); // [nH, T, nope]
  const qLatentByHead = b.op('MatMul', [qNopeByHead, keyUp]); // [nH, T, R]
  const qLatent = b.op('Transpose', [qLatentByHead], { perm: [1, 0, 2] });
  const qRoped = applyInterleavedRope(b, qPe!, nH, rope, cos, sin);
  const qOut = b.op('Mul', [b.op('Concat', [qLatent, qRoped], { axis: 2 }), b.scalarFloat(softmaxScale)]);

  const kvA = linear(b, xn, w.kvA, 'kv_a_proj');
  const [c, kPe] = b.opMulti('Split', [kvA, b.int64s([R, rope])], { axis: 1 }, { outputs: 2 });
  const cNormed = rmsNorm(b, c!, w.kvANorm, eps, 'kv_a_norm');
  const kPeRoped = b.op('Reshape', [applyInterleavedRope(b, kPe!, 1, rope, cos, sin), b.int64s([-1, rope])]);
  return { q: qOut, kv: b.op('Concat', [cNormed, kPeRoped], { axis: 1 }) };
}
