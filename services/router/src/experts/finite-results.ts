import { firstNonFiniteRow } from '@expertmesh/wire';
import { NonFiniteResultError } from './dispatch-errors.js';

/** The router sent non-finite hidden states: no shard is to blame, and no replica would do better. */
export class InputNotFiniteError extends Error {
  override readonly name = 'InputNotFiniteError';
}

/**
 * Throws NonFiniteResultError when a shard's answer holds NaN or ±Inf although the rows it was sent
 * were finite (a faulty or hostile shard: such values must never reach sampling). One float64 sum
 * finds it on the common path (a sum of finite float32 values cannot overflow a float64).
 */
export function checkFiniteAnswer(values: Float32Array, sent: Float32Array, cols: number, shard: string, layer: number): void {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  if (Number.isFinite(sum)) return;
  const row = firstNonFiniteRow(values, cols);
  if (firstNonFiniteRow(sent.subarray(row * cols, (row + 1) * cols), cols) >= 0) {
    throw new InputNotFiniteError(`layer ${layer}: the hidden states sent to shard ${shard} are not finite (row ${row}): the model diverged before the experts`);
  }
  throw new NonFiniteResultError(shard, layer, row);
}
