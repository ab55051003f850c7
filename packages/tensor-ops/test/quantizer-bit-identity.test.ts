import { describe, expect, it } from 'vitest';
import { quantizeBlockwise, type QuantizedBits } from '@expertmesh/tensor-ops';
import { quantizeBlockwiseReference } from '../../../test/helpers/quantizer-reference.js';
import { quantizedDifference } from '../../../test/helpers/quantized-equality.js';
import { rng } from '../../../test/reference-selftest/tiny-checkpoint.js';

/**
 * The fast quantizeBlockwise against the quantiser it replaced (kept word for word as quantizeBlockwiseReference):
 * the same codes and scales bit for bit, on random matrices and on the cases where rounding and special values
 * decide (ties at .5, zeros, ±max, subnormals, NaN, ±infinity, clamping, partial and odd last blocks).
 */
const FORMATS: [QuantizedBits, number][] = [
  [8, 128],
  [8, 32],
  [4, 32],
  [4, 16],
];

function expectSame(w: Float32Array, rows: number, cols: number, bits: QuantizedBits, block: number): void {
  expect(quantizedDifference(quantizeBlockwise(w, rows, cols, bits, block), quantizeBlockwiseReference(w, rows, cols, bits, block))).toBeNull();
}

/** Values k·2^e and (k + ½)·2^e (k in -qmax … qmax - 1) with the block's amax qmax·2^e: the scale is exactly 2^e, so every product w/scale is exact and the halves are true ties. */
function ties(rows: number, cols: number, bits: QuantizedBits, block: number, random: () => number): Float32Array {
  const qmax = bits === 8 ? 127 : 7;
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c0 = 0; c0 < cols; c0 += block) {
      const unit = 2 ** Math.floor(random() * 40 - 20);
      w[r * cols + c0] = (random() < 0.5 ? -qmax : qmax) * unit;
      for (let c = c0 + 1; c < Math.min(cols, c0 + block); c++) w[r * cols + c] = (Math.floor(random() * 2 * qmax) - qmax + (random() < 0.7 ? 0.5 : 0)) * unit;
    }
  }
  return w;
}

describe('quantizeBlockwise equals the quantiser it replaced, bit for bit', () => {
  for (const [bits, block] of FORMATS) {
    it(`${bits}-bit, ${block}-column blocks: random matrices, whole, partial and odd last blocks`, () => {
      const random = rng(bits * 1000 + block);
      for (const [rows, cols] of [
        [7, block * 3],
        [5, block * 2 + 1],
        [3, block - 3],
        [4, 1],
        [0, block],
      ] as [number, number][]) {
        const w = Float32Array.from({ length: rows * cols }, () => (random() - 0.5) * 2 ** Math.floor(random() * 16 - 8));
        expectSame(w, rows, cols, bits, block);
      }
    });

    it(`${bits}-bit, ${block}-column blocks: ties at .5 round as Math.round does (half towards +∞)`, () => {
      const [rows, cols] = [9, block * 4 + 5];
      const w = ties(rows, cols, bits, block, rng(block + bits));
      // The ties are real: some values sit exactly half way between two codes.
      const q = quantizeBlockwiseReference(w, rows, cols, bits, block);
      const kBlocks = Math.ceil(cols / block);
      let halves = 0;
      for (let i = 0; i < w.length; i++) {
        const x = w[i]! / q.scales[Math.floor(i / cols) * kBlocks + Math.floor((i % cols) / block)]!;
        if (Math.abs(x - Math.trunc(x)) === 0.5) halves++;
      }
      expect(halves).toBeGreaterThan(w.length / 4);
      expectSame(w, rows, cols, bits, block);
    });

    it(`${bits}-bit, ${block}-column blocks: zeros, ±max, subnormals, NaN, ±infinity and clamped values`, () => {
      const cols = block + 3;
      const special = [0, -0, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, -1.401298464324817e-45, 1.1754942106924411e-38, NaN, Infinity, -Infinity, 0.5, -0.5, 1e-30];
      const rows: Float32Array[] = [];
      const random = rng(bits + block * 7);
      // Each special value alone in a block, and beside ordinary values.
      for (const v of special) {
        rows.push(Float32Array.from({ length: cols }, (_, c) => (c === 0 || c === cols - 1 ? v : 0)));
        rows.push(Float32Array.from({ length: cols }, (_, c) => (c % 5 === 1 ? v : (random() - 0.5) * 0.01)));
      }
      // A subnormal amax: its scale rounds far from amax / qmax, so w / scale passes qmax and clamps.
      rows.push(Float32Array.from({ length: cols }, (_, c) => (c % 2 ? 2e-43 : -1.9e-43)));
      rows.push(new Float32Array(cols)); // all zeros: scale 0, codes at the zero point
      rows.push(new Float32Array(cols).fill(NaN));
      const w = new Float32Array(rows.length * cols);
      rows.forEach((row, r) => w.set(row, r * cols));
      expectSame(w, rows.length, cols, bits, block);
    });
  }

  it('refuses what the replaced quantiser refused, with the same messages', () => {
    expect(() => quantizeBlockwise(new Float32Array(48), 1, 48, 8, 48)).toThrow(/power of two/);
    expect(() => quantizeBlockwise(new Float32Array(10), 2, 6, 8, 32)).toThrow(/expected 2×6/);
  });
});
