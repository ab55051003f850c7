import type { ModelConfig } from '@expertmesh/model-config';
import { OnnxModelBuilder } from '@expertmesh/tensor-ops';

/**
 * Attention over the latent cache, the same for every layer:
 *   K = V' = pool[slots]                       [B, L, rank + rope]  (V' = its first `rank` columns)
 *   p = softmax(q · Kᵀ + mask)                 [B, Tq, heads, L]    (q arrives pre-scaled)
 *   o_latent = p · V'                          [B, Tq, heads, rank]
 * The cache pool is passed whole (onnxruntime reads it in place) with the slot of every key;
 * the mask (0 or -inf) holds causality and the padding of shorter sequences.
 */
export function buildAttentionCoreGraph(config: ModelConfig): Uint8Array {
  const { numHeads: nH, kvLoraRank: R, qkRopeHeadDim: rope } = config;
  const D = R + rope;
  const b = new OnnxModelBuilder('attention_core');
  const q = b.input('q', 'float32', ['B', 'Tq', nH, D]);
  const pool = b.input('pool', 'float32', ['S', D]);
  const slots = b.input('slots', 'int32', ['B', 'L']);
  const mask = b.input('mask', 'float32', ['B', 'Tq', 1, 'L']);
  const keys = b.op('Gather', [pool, slots], { axis: 0 }); // [B, L, D]
  const keysT = b.op('Unsqueeze', [b.op('Transpose', [keys], { perm: [0, 2, 1] }), b.int64s([1])]); // [B, 1, D, L]
  const scores = b.op('Add', [b.op('MatMul', [q, keysT]), mask]);
  const probs = b.op('Softmax', [scores], { axis: -1 });
  const values = b.op('Unsqueeze', [b.op('Slice', [keys, b.int64s([0]), b.int64s([R]), b.int64s([2])]), b.int64s([1])]); // [B,1,L,R]
  b.alias(b.op('MatMul', [probs, values]), 'o_latent');
  b.output('o_latent', 'float32', ['B', 'Tq', nH, R]);
  return b.toBytes();
}
