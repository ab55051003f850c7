import type { ModelConfig } from '@expertmesh/model-config';
import type { OnnxModelBuilder } from '@expertmesh/tensor-ops';
import { ATTENTION_SETS } from '../attention-batch.js';

/**
 * Attention over the latent cache and this step's own new rows, in the layer's graph:
 *   per set of G sequences' new tokens, padded to Tq each:
 *     K = V' = [pool[cached_slots], kv[rows]]   [G, Lc + Tq, rank + rope]  (V' = its first `rank` columns)
 *     p = softmax(q[rows] · Kᵀ + mask)          [G, Tq, heads, Lc + Tq]    (q arrives pre-scaled)
 *     o = p · V'                                [G·Tq, heads, rank]
 *   o_latent = [o per set…][output_rows]        [T, heads, rank]
 * The pool is passed whole and read in place, holding only rows of earlier steps: this step's rows
 * (kv [T, rank + rope]) are read from the graph itself and written to the cache after the run.
 * The mask (0 or -inf) holds causality and the padding. Decode tokens are one set (Tq = 1), prefill
 * chunks the others (see `planAttention`), so a mixed step never pads a decode row to a chunk.
 */
export function appendAttentionCore(b: OnnxModelBuilder, config: ModelConfig, q: string, kv: string): string {
  const { numHeads: nH, kvLoraRank: R, qkRopeHeadDim: rope } = config;
  const D = R + rope;
  const pool = b.input('pool', 'float32', ['S', D]);
  const outputs = ATTENTION_SETS.map((set) => {
    const rows = b.input(`${set}_rows`, 'int32', [`${set}_G`, `${set}_Tq`]);
    const cachedSlots = b.input(`${set}_cached_slots`, 'int32', [`${set}_G`, `${set}_Lc`]);
    const mask = b.input(`${set}_mask`, 'float32', [`${set}_G`, `${set}_Tq`, 1, `${set}_L`]);
    const keys = b.op('Concat', [b.op('Gather', [pool, cachedSlots], { axis: 0 }), b.op('Gather', [kv, rows], { axis: 0 })], { axis: 1 });
    const keysByHead = b.op('Unsqueeze', [keys, b.int64s([1])]); // [G, 1, L, D]
    // Transposed right before the product, so onnxruntime fuses the two (FusedMatMul, transB): no copy of the keys.
    const scores = b.op('Add', [b.op('MatMul', [b.op('Gather', [q, rows], { axis: 0 }), b.op('Transpose', [keysByHead], { perm: [0, 1, 3, 2] })]), mask]);
    const probs = b.op('Softmax', [scores], { axis: -1 });
    // p · K then its first `rank` columns: slicing the small product, not the keys (the rope columns cost 1/9 more work).
    const o = b.op('Slice', [b.op('MatMul', [probs, keysByHead]), b.int64s([0]), b.int64s([R]), b.int64s([3])]);
    return b.op('Reshape', [o, b.int64s([-1, nH, R])]);
  });
  const outputRows = b.input('output_rows', 'int32', ['T']);
  return b.op('Gather', [b.op('Concat', outputs, { axis: 0 }), outputRows], { axis: 0 });
}
