import type { OnnxModelBuilder } from '@expertmesh/tensor-ops';

/**
 * Interleaved (complex-pair) RoPE as DeepSeek applies it: pair i = (x[2i], x[2i+1]) turns by θ_i.
 * `x` is [T, heads, rope]; `cos`/`sin` are [T, 1, rope/2, 1] so they broadcast over heads.
 */
export function applyInterleavedRope(b: OnnxModelBuilder, x: string, heads: number, ropeDim: number, cos: string, sin: string): string {
  const pairs = b.op('Reshape', [x, b.int64s([-1, heads, ropeDim / 2, 2])]);
  const [re, im] = b.opMulti('Split', [pairs, b.int64s([1, 1])], { axis: 3 }, { outputs: 2 });
  const rotatedRe = b.op('Sub', [b.op('Mul', [re!, cos]), b.op('Mul', [im!, sin])]);
  const rotatedIm = b.op('Add', [b.op('Mul', [re!, sin]), b.op('Mul', [im!, cos])]);
  const rotated = b.op('Concat', [rotatedRe, rotatedIm], { axis: 3 });
  return b.op('Reshape', [rotated, b.int64s([-1, heads, ropeDim])]);
}
