import type { OnnxModelBuilder } from '@expertmesh/tensor-ops';

/**
 * Interleaved (complex-pair) RoPE as DeepSeek applies it: pair i = (x[2i], x[2i+1]) turns by θ_i.
 * `x` is [T, heads, rope]; `cos`/`sin` are [T, rope/2], each token's own row. onnxruntime's fused
 * com.microsoft RotaryEmbedding (interleaved) does it in one operator where the spelled-out form took
 * eleven: the tokens as one sequence [1, T, heads·rope] at positions 0…T−1, which index cos/sin rows.
 */
export function applyInterleavedRope(b: OnnxModelBuilder, x: string, heads: number, ropeDim: number, cos: string, sin: string): string {
  const sequence = b.op('Reshape', [x, b.int64s([1, -1, heads * ropeDim])]);
  const rotated = b.op('RotaryEmbedding', [sequence, b.int64s([0], 'first_position'), cos, sin], { interleaved: 1, num_heads: heads }, { domain: 'com.microsoft' });
  return b.op('Reshape', [rotated, b.int64s([-1, heads, ropeDim])]);
}
