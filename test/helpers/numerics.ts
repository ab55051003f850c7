/** max |a - b| / max |b|: the error measure the correctness tests bound. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return diff / scale;
}

/** y = x · Wᵀ in float64, x [m, cols], W [rows, cols] (the product `linear` computes). */
export function productReference(x: ArrayLike<number>, w: ArrayLike<number>, m: number, rows: number, cols: number): Float64Array {
  const y = new Float64Array(m * rows);
  for (let i = 0; i < m; i++) for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += x[i * cols + c]! * w[r * cols + c]!;
    y[i * rows + r] = s;
  }
  return y;
}
