import { describe, expect, it } from 'vitest';
import { dequantizeBlockwise, linear, quantizeBlockwise, swiglu, type QuantizedBits, type WeightData } from '@expertmesh/tensor-ops';
import { productReference as reference } from '../../../test/helpers/numerics.js';
import { runProductGraph } from '../../../test/helpers/product-graph.js';

/**
 * int8/int4 weights: the quantiser's round trip stays within half a step of each block, its codes
 * are the layout MatMulNBits reads (checked by the product onnxruntime computes), and the
 * graph ops (linear, stacked SwiGLU) use them.
 */
const values = (rows: number, cols: number, seed: number): Float32Array => Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.61 + seed) * (1 + (i % 7)) / Math.sqrt(cols));
const input = (m: number, cols: number): Float32Array => Float32Array.from({ length: m * cols }, (_, i) => Math.cos(i * 0.37));

describe('blockwise int8/int4 quantisation', () => {
  for (const [bits, block, rows, cols] of [
    [8, 128, 5, 300],
    [8, 32, 3, 64],
    [4, 32, 6, 100],
    [4, 64, 2, 256],
  ] as [QuantizedBits, number, number, number][]) {
    it(`${bits}-bit, ${block}-column blocks, ${rows}×${cols}: every value within half a step of its block`, () => {
      const w = values(rows, cols, bits + block);
      w.fill(0, cols, cols + Math.min(block, cols)); // an all-zero block in row 1
      const q = quantizeBlockwise(w, rows, cols, bits, block);
      const back = dequantizeBlockwise(q);
      const kBlocks = Math.ceil(cols / block);
      expect(q.codes.length).toBe((rows * kBlocks * block * bits) / 8);
      expect(q.scales.length).toBe(rows * kBlocks);
      let worst = 0;
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
        const s = q.scales[r * kBlocks + Math.floor(c / block)]!;
        const err = Math.abs(back[r * cols + c]! - w[r * cols + c]!);
        expect(err).toBeLessThanOrEqual(s / 2 + 1e-7 * Math.abs(w[r * cols + c]!));
        if (s > 0) worst = Math.max(worst, err / s);
      }
      // The bound is tight: rounding uses the whole half step somewhere.
      expect(worst).toBeGreaterThan(0.3);
      expect(back.subarray(cols, cols + Math.min(block, cols)).every((v) => v === 0)).toBe(true);
    });
  }

  it('codes of a known block: the largest magnitude maps to ±qmax around the zero point', () => {
    const w = Float32Array.from([1, -0.5, 0.25, 0, ...new Array<number>(28).fill(0)]);
    const q8 = quantizeBlockwise(w, 1, 32, 8, 32);
    expect(q8.scales[0]).toBeCloseTo(1 / 127, 9);
    expect([...q8.codes.subarray(0, 4)]).toEqual([255, 128 - 64, 128 + 32, 128]);
    const q4 = quantizeBlockwise(w, 1, 32, 4, 32);
    expect(q4.scales[0]).toBeCloseTo(1 / 7, 7);
    // 4-bit: 1 → 15, -0.5 → 8 - 4 (round(-3.5) = -3 in JS, half towards +∞) = 5, 0.25 → 8 + 2, 0 → 8; low nibble first.
    expect([...q4.codes.subarray(0, 2)]).toEqual([15 | (5 << 4), 10 | (8 << 4)]);
  });

  it('rejects a block MatMulNBits cannot run and a wrongly sized weight', () => {
    expect(() => quantizeBlockwise(new Float32Array(48), 1, 48, 8, 48)).toThrow(/power of two/);
    expect(() => quantizeBlockwise(new Float32Array(10), 2, 6, 8, 32)).toThrow(/expected 2×6/);
  });

  for (const bits of [8, 4] as const) {
    it(`MatMulNBits over ${bits}-bit codes (a partial last block) equals x · dequantised Wᵀ up to int8 activation rounding`, async () => {
      const [rows, cols, m] = [48, 200, 3];
      const w = values(rows, cols, 9);
      const q = quantizeBlockwise(w, rows, cols, bits, 64);
      const weight: WeightData = { kind: 'quantized', dims: [rows, cols], q };
      const x = input(m, cols);
      const y = await runProductGraph((b, xin) => linear(b, xin, weight, 'w'), x, m, cols, rows);
      const back = dequantizeBlockwise(q);
      const exactOfCodes = reference(x, back, m, rows, cols);
      const exactOfWeights = reference(x, w, m, rows, cols);
      let scale = 0;
      for (const v of exactOfCodes) scale = Math.max(scale, Math.abs(v));
      for (let i = 0; i < m; i++) for (let r = 0; r < rows; r++) {
        const at = i * rows + r;
        const errCodes = Math.abs(y[at]! - exactOfCodes[at]!);
        // Activations rounded to int8 per block (accuracy level 4): a few parts in a thousand of the
        // output scale; a wrong layout (nibble order, block or scale placement) would be O(1).
        expect(errCodes / scale).toBeLessThan(3e-2);
        // Against the original weights, within what the weights' own rounding can add: Σ|x|·|W - Ŵ|.
        let weightBound = 0;
        for (let c = 0; c < cols; c++) weightBound += Math.abs(x[i * cols + c]!) * Math.abs(w[r * cols + c]! - back[r * cols + c]!);
        expect(Math.abs(y[at]! - exactOfWeights[at]!)).toBeLessThanOrEqual(weightBound + errCodes + 1e-6);
      }
      // Zero rows (an expert no token chose) run and give zero rows.
      expect(await runProductGraph((b, xin) => linear(b, xin, weight, 'w'), new Float32Array(0), 0, cols, rows)).toHaveLength(0);
    });
  }

  it('SwiGLU stacks quantised gate and up into one product with the values of two', async () => {
    const [H, I, m] = [64, 32, 4];
    const quant = (rows: number, cols: number, seed: number): WeightData => ({ kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(values(rows, cols, seed), rows, cols, 8, 32) });
    const w = { gate: quant(I, H, 1), up: quant(I, H, 2), down: quant(H, I, 3), hidden: H, intermediate: I };
    const x = input(m, H);
    const stacked = await runProductGraph((b, xin) => swiglu(b, xin, w, 'e'), x, m, H, H);
    const apart = await runProductGraph((b, xin) => {
      const silu = (v: string): string => b.op('Mul', [v, b.op('Sigmoid', [v])]);
      return linear(b, b.op('Mul', [silu(linear(b, xin, w.gate, 'g')), linear(b, xin, w.up, 'u')]), w.down, 'd');
    }, x, m, H, H);
    expect([...stacked]).toEqual([...apart]);
  });
});
