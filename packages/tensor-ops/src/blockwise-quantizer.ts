/**
 * Symmetric blockwise integer quantisation of a matrix W [rows, cols] along its input dimension,
 * in the layout onnxruntime's com.microsoft MatMulNBits reads (B [N, k_blocks, blob], scales
 * [N, k_blocks], implicit zero point 2^(bits-1)):
 *   per row r and block j of `block` columns:  s = max|W[r, block j]| / qmax
 *   code = clamp(round(W / s), -qmax, qmax) + 2^(bits-1)        W ≈ (code - 2^(bits-1)) · s
 * qmax is 127 for 8 bits and 7 for 4 bits (symmetric: -8 is never used, as in llama.cpp's Q4_0
 * rounding the largest magnitude lands on ±7). A column past the end of the matrix (the last block
 * of a row when cols is not a multiple of `block`) holds the zero point.
 * The round trip errs by at most s/2 per element: half a step of its own block.
 */
export type QuantizedBits = 4 | 8;

export interface BlockwiseQuantized {
  readonly bits: QuantizedBits;
  readonly block: number;
  readonly rows: number;
  readonly cols: number;
  /** [rows, ceil(cols / block), block · bits / 8] bytes; 4-bit codes two per byte, low nibble first. */
  readonly codes: Uint8Array;
  /** [rows, ceil(cols / block)] float32. */
  readonly scales: Float32Array;
}

export function quantizeBlockwise(w: Float32Array, rows: number, cols: number, bits: QuantizedBits, block: number): BlockwiseQuantized {
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

/** W as the quantised codes say it, float32 [rows, cols]: what MatMulNBits multiplies by. */
export function dequantizeBlockwise(q: BlockwiseQuantized): Float32Array {
  const { rows, cols, block, bits } = q;
  const kBlocks = Math.ceil(cols / block);
  const blob = (block * bits) / 8;
  const zero = bits === 8 ? 128 : 8;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const j = Math.floor(c / block);
      const i = c - j * block;
      const base = (r * kBlocks + j) * blob;
      const code = bits === 8 ? q.codes[base + i]! : (q.codes[base + (i >> 1)]! >> (i & 1 ? 4 : 0)) & 0x0f;
      out[r * cols + c] = (code - zero) * q.scales[r * kBlocks + j]!;
    }
  }
  return out;
}

/** Rows of several quantised matrices of the same width and format stacked into one (codes and scales are per row). */
export function stackQuantizedRows(parts: readonly BlockwiseQuantized[]): BlockwiseQuantized {
  const first = parts[0]!;
  for (const p of parts) {
    if (p.cols !== first.cols || p.bits !== first.bits || p.block !== first.block) throw new RangeError('stacked quantised matrices must share width, bits and block');
  }
  const codes = new Uint8Array(parts.reduce((n, p) => n + p.codes.length, 0));
  const scales = new Float32Array(parts.reduce((n, p) => n + p.scales.length, 0));
  let c = 0;
  let s = 0;
  for (const p of parts) {
    codes.set(p.codes, c);
    scales.set(p.scales, s);
    c += p.codes.length;
    s += p.scales.length;
  }
  return { ...first, rows: parts.reduce((n, p) => n + p.rows, 0), codes, scales };
}
