import type { BlockwiseQuantized, QuantizedBits } from '@expertmesh/tensor-ops';

/**
 * The blockwise quantiser as it was before issue 13v made it fast, kept word for word (only renamed): the
 * definition the fast quantisers (quantizeBlockwise, quantizeScaledCodes) must equal bit for bit, in tests and in
 * bench/quantize-at-load.ts. Do not "improve" it: its rounding (Math.round, half towards +∞, in float64), its
 * float32 scale and what NaN and infinity give are the contract.
 */
export function quantizeBlockwiseReference(w: Float32Array, rows: number, cols: number, bits: QuantizedBits, block: number): BlockwiseQuantized {
  if (w.length !== rows * cols) throw new RangeError(`weight has ${w.length} values, expected ${rows}×${cols}`);
  if (!Number.isInteger(Math.log2(block)) || block < 16) throw new RangeError(`block ${block} must be a power of two ≥ 16 (MatMulNBits)`);
  const kBlocks = Math.ceil(cols / block);
  const blob = (block * bits) / 8;
  const qmax = bits === 8 ? 127 : 7;
  const zero = bits === 8 ? 128 : 8;
  const codes = new Uint8Array(rows * kBlocks * blob).fill(bits === 8 ? zero : zero * 17);
  const scales = new Float32Array(rows * kBlocks);
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    for (let j = 0; j < kBlocks; j++) {
      const c0 = j * block;
      const c1 = Math.min(cols, c0 + block);
      let amax = 0;
      for (let c = c0; c < c1; c++) {
        const a = Math.abs(w[rowStart + c]!);
        if (a > amax) amax = a;
      }
      const s = Math.fround(amax / qmax);
      scales[r * kBlocks + j] = s;
      if (s === 0) continue;
      const inv = 1 / s;
      const base = (r * kBlocks + j) * blob;
      for (let c = c0; c < c1; c++) {
        const q = Math.max(-qmax, Math.min(qmax, Math.round(w[rowStart + c]! * inv))) + zero;
        const i = c - c0;
        if (bits === 8) codes[base + i] = q;
        else {
          const at = base + (i >> 1);
          codes[at] = i & 1 ? (codes[at]! & 0x0f) | (q << 4) : (codes[at]! & 0xf0) | q;
        }
      }
    }
  }
  return { bits, block, rows, cols, codes, scales };
}
