import type { BlockwiseQuantized, SwigluWeights, WeightData } from '@expertmesh/tensor-ops';

/**
 * The native kernel's numerics in plain JavaScript, operation for operation (each float32 operation rounded
 * with Math.fround, fused multiply-adds rounded once, the integer sums exact), so that its outputs can be held
 * to the same bits.
 */

/** Rounds half to even, as C's nearbyint in the default rounding mode. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** Symmetric int8 per row and `block`-column block: scale = max|a| / 127, q = round(a · (1 / scale)). */
function quantizeActivations(a: Float32Array, rows: number, cols: number, block: number): { q: Int8Array; scale: Float32Array; kb: number } {
  const kb = Math.ceil(cols / block);
  const q = new Int8Array(rows * kb * block);
  const scale = new Float32Array(rows * kb);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < kb; j++) {
      const c0 = j * block;
      const c1 = Math.min(cols, c0 + block);
      let amax = 0;
      for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(a[r * cols + c]!));
      const s = Math.fround(amax / 127);
      scale[r * kb + j] = s;
      const inv = s !== 0 ? Math.fround(1 / s) : 0;
      for (let c = c0; c < c1; c++) q[r * kb * block + c] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(a[r * cols + c]! * inv))));
    }
  }
  return { q, scale, kb };
}

function code(w: BlockwiseQuantized, row: number, col: number): number {
  const kb = Math.ceil(w.cols / w.block);
  const blob = (w.block * w.bits) / 8;
  const j = Math.floor(col / w.block);
  const i = col - j * w.block;
  const base = (row * kb + j) * blob;
  return w.bits === 8 ? w.codes[base + i]! - 128 : ((w.codes[base + (i >> 1)]! >> (i & 1 ? 4 : 0)) & 0x0f) - 8;
}

/** a [m, w.cols] · wᵀ → [m, w.rows]: per block an exact integer sum, then acc += isum · (s_a · s_w) in float32. */
export function quantizedProduct(a: Float32Array, m: number, w: BlockwiseQuantized): Float32Array {
  const { q, scale, kb } = quantizeActivations(a, m, w.cols, w.block);
  const out = new Float32Array(m * w.rows);
  for (let i = 0; i < m; i++) {
    for (let n = 0; n < w.rows; n++) {
      let acc = 0;
      for (let j = 0; j < kb; j++) {
        let isum = 0;
        for (let c = j * w.block; c < Math.min(w.cols, (j + 1) * w.block); c++) isum += code(w, n, c) * q[i * kb * w.block + c]!;
        const s = Math.fround(scale[i * kb + j]! * w.scales[n * kb + j]!);
        acc = Math.fround(acc + Math.fround(isum * s));
      }
      out[i * w.rows + n] = acc;
    }
  }
  return out;
}

/**
 * float32 fused multiply-add, rounded once: a · b is exact in a double, p + c is split exactly into s + e (TwoSum),
 * and s rounded to float32 is the answer unless s sits exactly halfway between two floats, where e breaks the tie.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const e = p - (s - bb) + (c - bb);
  const r = Math.fround(s);
  if (e === 0 || r === s) return r;
  const d = s - r; // exact: s is within one float32 spacing of r
  const other = r + 2 * d;
  if (Math.fround(other) !== other) return r; // s is not halfway
  return Math.sign(e) === Math.sign(d) ? other : r;
}

/** x_i · W[n] as the kernel sums it: 16 lanes (k mod 16) by fmaf in ascending k, zero-padded, then the lane tree. */
export function float32Dot(x: Float32Array, xAt: number, w: Float32Array, wAt: number, k: number): number {
  const acc = new Array<number>(16).fill(0);
  for (let k0 = 0; k0 < k; k0 += 16) for (let l = 0; l < 16; l++) acc[l] = k0 + l < k ? fmaf(x[xAt + k0 + l]!, w[wAt + k0 + l]!, acc[l]!) : fmaf(0, 0, acc[l]!);
  for (const half of [8, 4, 2, 1]) for (let l = 0; l < half; l++) acc[l] = Math.fround(acc[l]! + acc[l + half]!);
  return acc[0]!;
}

/** a [m, cols] · wᵀ for a float32 weight [rows, cols]. */
function float32Product(a: Float32Array, m: number, w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m * rows);
  for (let i = 0; i < m; i++) for (let n = 0; n < rows; n++) out[i * rows + n] = float32Dot(a, i * cols, w, n * cols, cols);
  return out;
}

/** a [m, cols] · wᵀ in the kernel's numerics, for float32 values or blockwise codes. */
export function referenceProduct(a: Float32Array, m: number, w: WeightData): Float32Array {
  if (w.kind === 'quantized') return quantizedProduct(a, m, w.q);
  if (w.kind === 'memory') return float32Product(a, m, w.data, w.dims[0]!, w.dims[1]!);
  throw new Error('reference: weights in memory only');
}

/** One expert over m rows: down(silu(gate(x)) ⊙ up(x)), silu(g) = g · float(1 / (1 + exp(−g))) with exp in double. */
export function referenceExpert(x: Float32Array, m: number, w: SwigluWeights): Float32Array {
  const g = referenceProduct(x, m, w.gate);
  const u = referenceProduct(x, m, w.up);
  const h = new Float32Array(g.length);
  for (let i = 0; i < h.length; i++) {
    const sig = Math.fround(1 / (1 + Math.exp(-g[i]!)));
    h[i] = Math.fround(Math.fround(g[i]! * sig) * u[i]!);
  }
  return referenceProduct(h, m, w.down);
}
