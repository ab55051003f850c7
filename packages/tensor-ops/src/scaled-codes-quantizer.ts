import { code8, emptyQuantized, nibble, type BlockwiseQuantized, type QuantizedBits } from './blockwise-quantizer.js';

/**
 * A matrix stored as 8-bit codes with a grid of block scales, as DeepSeek ships its FP8 weights:
 * W[r][c] = values[codes[r·cols + c]] · scales[⌊r / blockRows⌋][⌊c / blockCols⌋] (float32 product).
 */
export interface ScaledCodes {
  readonly codes: Uint8Array;
  /** The value of each of the 256 codes (FP8 e4m3's decode table). */
  readonly values: Float32Array;
  /** [⌈rows / blockRows⌉, ⌈cols / blockCols⌉]. */
  readonly scales: Float32Array;
  readonly rows: number;
  readonly cols: number;
  readonly blockRows: number;
  readonly blockCols: number;
}

/** How the 256 codes order by magnitude: rank 0 for NaN, 1 … for the distinct magnitudes from the smallest. */
interface MagnitudeOrder {
  readonly rank: Uint16Array;
  /** The magnitude of each rank (index 0 unused). */
  readonly magnitude: Float64Array;
  readonly ranks: number;
  /** No code is ±infinity (an infinite value times a scale of 0 would be NaN, which the ranks do not foresee). */
  readonly finite: boolean;
}

const orders = new WeakMap<Float32Array, MagnitudeOrder>();

function magnitudeOrder(values: Float32Array): MagnitudeOrder {
  let order = orders.get(values);
  if (order) return order;
  const distinct = [...new Set([...values].filter((v) => !Number.isNaN(v)).map(Math.abs))].sort((a, b) => a - b);
  const rank = new Uint16Array(256);
  for (let c = 0; c < 256; c++) rank[c] = Number.isNaN(values[c]!) ? 0 : 1 + distinct.indexOf(Math.abs(values[c]!));
  order = { rank, magnitude: Float64Array.from([0, ...distinct]), ranks: distinct.length + 1, finite: distinct.every(Number.isFinite) };
  orders.set(values, order);
  return order;
}

/**
 * Whether quantizeScaledCodes takes this matrix: each quantised block within one column of scale blocks
 * (`blockCols` a multiple of `block`), every scale and every code's value finite. When not, widen the matrix
 * and use quantizeBlockwise (which gives what quantizeScaledCodes would).
 */
export function scaledCodesQuantizable(m: ScaledCodes, block: number): boolean {
  return m.blockCols % block === 0 && m.values.length === 256 && magnitudeOrder(m.values).finite && m.scales.every(Number.isFinite);
}

/**
 * quantizeBlockwise of the matrix `m` holds, bit for bit (same codes, same scales), without widening it to
 * float32 first. Made for quantising DeepSeek's FP8 checkpoints at load (hours at R1's 671 B parameters
 * through float32; see docs/benchmarks.md, issue 13v).
 *
 * Why it can: within one scale block, every value is values[code] · s with one s, so
 * - the largest |W| of a quantised block is the float32 of (the largest |values[code]| among its codes) · |s|:
 *   the float32 product is monotonic in |values[code]| and odd in it, and NaN codes are left out of both, so
 *   the block's amax comes from the codes' magnitude ranks, an integer maximum;
 * - each value's code then depends only on its FP8 code, so one table of 256 codes, built with
 *   quantizeBlockwise's own arithmetic, serves every quantised block of that scale block with the same amax
 *   (a scale block of 128×128 has a few dozen distinct ones at most).
 */
export function quantizeScaledCodes(m: ScaledCodes, bits: QuantizedBits, block: number): BlockwiseQuantized {
  const { codes, values, scales, rows, cols, blockRows, blockCols } = m;
  if (codes.length !== rows * cols) throw new RangeError(`weight has ${codes.length} codes, expected ${rows}×${cols}`);
  const scaleCols = Math.ceil(cols / blockCols);
  if (scales.length !== Math.ceil(rows / blockRows) * scaleCols) throw new RangeError(`${scales.length} scales for a ${rows}×${cols} matrix in ${blockRows}×${blockCols} blocks`);
  if (!scaledCodesQuantizable(m, block)) throw new RangeError(`quantizeScaledCodes takes ${blockRows}×${blockCols} scale blocks of finite scales over ${block}-column blocks only: widen the matrix and use quantizeBlockwise`);
  const q = emptyQuantized(rows, cols, bits, block);
  const { rank, magnitude, ranks } = magnitudeOrder(values);
  const kBlocks = Math.ceil(cols / block);
  const perScaleCol = blockCols / block;
  // Code tables of the current scale block, one per amax rank, each valid while its stamp is the scale block's.
  const tables = new Uint8Array(ranks * 256);
  const blockScale = new Float32Array(ranks);
  const stamp = new Int32Array(ranks).fill(-1);
  const qmax = bits === 8 ? 127 : 7;
  const out = q.codes;
  for (let br = 0, scaleBlock = 0; br * blockRows < rows; br++) {
    for (let bc = 0; bc < scaleCols; bc++, scaleBlock++) {
      const s = scales[scaleBlock]!;
      const jEnd = Math.min(kBlocks, (bc + 1) * perScaleCol);
      for (let r = br * blockRows, rEnd = Math.min(rows, r + blockRows); r < rEnd; r++) {
        for (let j = bc * perScaleCol; j < jEnd; j++) {
          const from = r * cols + j * block;
          const to = r * cols + Math.min(cols, (j + 1) * block);
          let top = 0;
          for (let i = from; i < to; i++) {
            const k = rank[codes[i]!]!;
            if (k > top) top = k;
          }
          if (stamp[top] !== scaleBlock) {
            // quantizeBlockwise's arithmetic on each value the scale block can hold.
            const amax = top === 0 ? 0 : Math.fround(magnitude[top]! * Math.abs(s));
            const scale = Math.fround(amax / qmax);
            blockScale[top] = scale;
            stamp[top] = scaleBlock;
            const inv = 1 / scale;
            const base = top * 256;
            if (scale !== 0) for (let c = 0; c < 256; c++) tables[base + c] = bits === 8 ? code8(Math.fround(values[c]! * s) * inv) : nibble(Math.fround(values[c]! * s) * inv);
          }
          const scale = blockScale[top]!;
          const at = r * kBlocks + j;
          q.scales[at] = scale;
          if (scale === 0) continue;
          const base = top * 256;
          if (bits === 8) {
            for (let i = from, o = at * block; i < to; i++, o++) out[o] = tables[base + codes[i]!]!;
          } else {
            let i = from;
            let o = (at * block) >> 1;
            for (; i + 1 < to; i += 2, o++) out[o] = tables[base + codes[i]!]! | (tables[base + codes[i + 1]!]! << 4);
            if (i < to) out[o] = tables[base + codes[i]!]! | 0x80;
          }
        }
      }
    }
  }
  return q;
}
