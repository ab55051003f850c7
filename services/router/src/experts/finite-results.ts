import { firstNonFiniteRow } from '@expertmesh/wire';
import { NonFiniteResultError } from './dispatch-errors.js';

/**
 * Throws NonFiniteResultError when one of `rows` of the combined output holds NaN or ±Inf right
 * after a shard's answer was added into them: rows are checked as each answer lands, so the first
 * shard that made a row non-finite is the one named.
 */
export function checkFiniteRows(out: Float32Array, cols: number, rows: Int32Array, shard: string, layer: number): void {
  for (const r of rows) {
    if (firstNonFiniteRow(out.subarray(r * cols, (r + 1) * cols), cols) >= 0) throw new NonFiniteResultError(shard, layer, r);
  }
}
