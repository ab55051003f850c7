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
  const q = emptyQuantized(rows, cols, bits, block);
  const { codes, scales } = q;
  const kBlocks = Math.ceil(cols / block);
  const qmax = bits === 8 ? 127 : 7;
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    for (let j = 0; j < kBlocks; j++) {
      const from = rowStart + j * block;
      const to = rowStart + Math.min(cols, (j + 1) * block);
      let amax = 0;
      for (let i = from; i < to; i++) {
        const a = Math.abs(w[i]!);
        if (a > amax) amax = a;
      }
      const s = Math.fround(amax / qmax);
      const at = r * kBlocks + j;
      scales[at] = s;
      if (s === 0) continue;
      if (bits === 8) codes8(w, from, to, 1 / s, codes, at * block);
      else codes4(w, from, to, 1 / s, codes, (at * block) >> 1);
    }
  }
  return q;
}

/**
 * The result's arrays before any block is quantised: every code at the zero point (what a column past the end
 * keeps, and a block whose scale is 0), every scale 0. Checks the block MatMulNBits needs.
 */
export function emptyQuantized(rows: number, cols: number, bits: QuantizedBits, block: number): BlockwiseQuantized {
  if (!Number.isInteger(Math.log2(block)) || block < 16) throw new RangeError(`block ${block} must be a power of two ≥ 16 (MatMulNBits)`);
  const kBlocks = Math.ceil(cols / block);
  const codes = new Uint8Array((rows * kBlocks * block * bits) / 8).fill(bits === 8 ? 0x80 : 0x88);
  return { bits, block, rows, cols, codes, scales: new Float32Array(rows * kBlocks) };
}

// quantizeBlockwise is the definition above written for speed (the definition word for word is
// test/helpers/quantizer-reference.ts; a test holds them bit for bit equal): one write loop per width, no
// read-modify-write of nibbles. What the arithmetic must keep to give the same codes: the scale is the float32
// of amax / qmax divided in float64; each value is multiplied by 1 / scale in float64 and rounded by Math.round
// (half towards +∞); NaN compares false everywhere, so a NaN value is left out of amax and its code is NaN,
// which a Uint8Array stores as 0 (a 4-bit code: the nibble 0, as `| 0` gives).

function codes8(w: Float32Array, from: number, to: number, inv: number, codes: Uint8Array, at: number): void {
  for (let i = from, o = at; i < to; i++, o++) codes[o] = code8(w[i]! * inv);
}

/** Two codes a byte, low nibble first; an odd last column pairs with the zero point. */
function codes4(w: Float32Array, from: number, to: number, inv: number, codes: Uint8Array, at: number): void {
  let i = from;
  let o = at;
  for (; i + 1 < to; i += 2, o++) codes[o] = nibble(w[i]! * inv) | (nibble(w[i + 1]! * inv) << 4);
  if (i < to) codes[o] = nibble(w[i]! * inv) | 0x80;
}

/** A value over its block's scale as an 8-bit code (NaN: NaN, which a Uint8Array stores as 0). */
export function code8(v: number): number {
  const x = Math.round(v);
  return x > 127 ? 255 : x < -127 ? 1 : x + 128;
}

/** A value over its block's scale as a 4-bit code (NaN: 0). */
export function nibble(v: number): number {
  const x = Math.round(v);
  return (x > 7 ? 15 : x < -7 ? 1 : x + 8) | 0;
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
