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
  const keys = b.op('Unsqueeze', [b.op('Gather', [pool, slots], { axis: 0 }), b.int64s([1])]); // [B, 1, L, D]
  // Transposed right before the product, so onnxruntime fuses the two (FusedMatMul, transB): no copy of the keys.
  const scores = b.op('Add', [b.op('MatMul', [q, b.op('Transpose', [keys], { perm: [0, 1, 3, 2] })]), mask]);
  const probs = b.op('Softmax', [scores], { axis: -1 });
  // p · K then its first `rank` columns: slicing the small product, not the keys (the rope columns cost 1/9 more work).
  const o = b.op('MatMul', [probs, keys]); // [B, Tq, heads, D]
  b.alias(b.op('Slice', [o, b.int64s([0]), b.int64s([R]), b.int64s([3])]), 'o_latent');
  b.output('o_latent', 'float32', ['B', 'Tq', nH, R]);
  return b.toBytes();
}
