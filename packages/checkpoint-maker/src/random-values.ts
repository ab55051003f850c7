import type { PlannedTensor } from './tensor-plan.js';

/** FNV-1a of the tensor name mixed with the seed: each tensor's values depend on nothing else. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0 || 1;
}

/** Uniform values offset ± halfWidth, scaled so activations keep unit size through the layers (variance 1/fan_in for projections). */
function valueRange(tensor: PlannedTensor): [number, number] {
  const fanIn = tensor.shape.length === 2 ? tensor.shape[1] : 1;
  switch (tensor.role) {
    case 'norm':
      return [1, 0.1];
    case 'bias':
      return [0, 0.1];
    case 'embedding':
      return [0, Math.sqrt(3)];
    default:
      return [0, Math.sqrt(3 / fanIn)];
  }
}

/**
 * One tensor's deterministic random values in row order, a run of rows at a time: a real-width tensor
 * (DeepSeek-R1's dense MLP, 132M values) is produced in pieces, so the caller can give its event loop a
 * turn between them and never holds the whole tensor as float32.
 */
export class RandomRows {
  private s: number;
  private readonly offset: number;
  private readonly halfWidth: number;
  /** Values in one row (1 for a vector: each value is a row). */
  readonly cols: number;
  readonly rows: number;
  private produced = 0;

  constructor(tensor: PlannedTensor, seed: number) {
    this.s = tensorSeed(seed, tensor.name);
    [this.offset, this.halfWidth] = valueRange(tensor);
    this.rows = tensor.shape[0];
    this.cols = tensor.shape.length === 2 ? tensor.shape[1] : 1;
  }

  /** Rows not produced yet. */
  get remaining(): number {
    return this.rows - this.produced;
  }

  /** The next `rows` rows (fewer at the end), row-major. */
  next(rows: number): Float32Array {
    const n = Math.min(rows, this.remaining);
    const values = new Float32Array(n * this.cols);
    // xorshift32 in locals: fast enough for the bench checkpoint's 600M values.
    let s = this.s;
    const { offset, halfWidth } = this;
    for (let i = 0; i < values.length; i++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      values[i] = offset + (2 * (s / 4294967296) - 1) * halfWidth;
    }
    this.s = s;
    this.produced += n;
    return values;
  }
}

/** Deterministic random values for one whole tensor (the rows of RandomRows, at once). */
export function randomValues(tensor: PlannedTensor, seed: number): Float32Array {
  const rows = new RandomRows(tensor, seed);
  return rows.next(rows.rows);
}
