import { describe, expect, it } from 'vitest';
import { dequantizeBlockFp8, FP8_E4M3_TABLE, quantizeBlockFp8 } from '../src/index.js';

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 4);
}

describe('block-wise FP8', () => {
  for (const [rows, cols, br, bc] of [
    [130, 300, 128, 128],
    [5, 7, 4, 4],
    [64, 64, 128, 128],
    [256, 128, 128, 128],
  ] as const) {
    it(`${rows}×${cols} in ${br}×${bc} blocks: scale grid, exact dequantisation and bounded error`, () => {
      const w = random(rows * cols, rows + cols);
      const { codes, scaleInv } = quantizeBlockFp8(w, rows, cols, br, bc);
      const gridCols = Math.ceil(cols / bc);
      expect(scaleInv.length).toBe(Math.ceil(rows / br) * gridCols);
      const deq = dequantizeBlockFp8(codes, scaleInv, rows, cols, br, bc);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const scale = scaleInv[Math.floor(r / br) * gridCols + Math.floor(c / bc)]!;
          // Exactly the per-element formula.
          expect(deq[r * cols + c]).toBe(Math.fround(FP8_E4M3_TABLE[codes[r * cols + c]!]! * scale));
          // 3 mantissa bits: relative error ≤ 1/16 of the block's largest value.
          expect(Math.abs(deq[r * cols + c]! - w[r * cols + c]!)).toBeLessThanOrEqual(scale * 448 * (1 / 16) + 1e-7);
        }
      }
    });
  }

  it('an all-zero block gets scale 1 and zero codes', () => {
    const { codes, scaleInv } = quantizeBlockFp8(new Float32Array(16), 4, 4, 4, 4);
    expect(Array.from(scaleInv)).toEqual([1]);
    expect(codes.every((c) => c === 0)).toBe(true);
  });
});
