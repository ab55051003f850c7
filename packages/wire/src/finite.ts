/**
 * The first row of a row-major [rows, cols] array holding NaN or ±Inf, or -1. Both ends check what
 * they receive: a value that is not a number must fail the call, never flow on into text.
 */
export function firstNonFiniteRow(values: Float32Array, cols: number): number {
  for (let i = 0; i < values.length; i++) {
    // x - x is NaN exactly when x is NaN or ±Inf.
    const v = values[i]!;
    if (v - v !== 0) return Math.floor(i / cols);
  }
  return -1;
}
