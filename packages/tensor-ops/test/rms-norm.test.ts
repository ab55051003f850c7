import { describe, expect, it } from 'vitest';
import { f32, floatData, Graph, OnnxModelBuilder, rmsNorm } from '../src/index.js';

/** RMSNorm as one fused onnxruntime operator: it must still compute x / sqrt(mean(x²) + eps) · w per row. */
describe('rmsNorm', () => {
  it('equals the float64 formula row by row (rows of different scales, a zero row, eps that matters)', async () => {
    const cols = 1024;
    const rows = 4;
    const eps = 1e-6;
    const w = Float32Array.from({ length: cols }, (_, i) => 0.5 + Math.sin(i * 0.3));
    const x = Float32Array.from({ length: rows * cols }, (_, i) => (Math.floor(i / cols) === 2 ? 0 : Math.cos(i * 0.71) * 10 ** (Math.floor(i / cols) - 1)));
    // A row tiny enough that eps dominates its mean square.
    for (let c = 0; c < cols; c++) x[3 * cols + c] = 1e-4 * Math.sin(c);
    const b = new OnnxModelBuilder('rms_norm');
    b.alias(rmsNorm(b, b.input('x', 'float32', ['M', cols]), w, eps, 'norm'), 'y');
    b.output('y', 'float32', ['M', cols]);
    const graph = await Graph.create('rms_norm', b.build());
    try {
      const y = floatData((await graph.run({ x: f32(x, [rows, cols]) })).y, 'rms_norm', 'y');
      for (let r = 0; r < rows; r++) {
        let ms = 0;
        for (let c = 0; c < cols; c++) ms += x[r * cols + c]! ** 2;
        const inv = 1 / Math.sqrt(ms / cols + eps);
        for (let c = 0; c < cols; c++) {
          const expected = x[r * cols + c]! * inv * w[c]!;
          expect(Math.abs(y[r * cols + c]! - expected)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(expected)));
        }
      }
    } finally {
      await graph.release();
    }
  });
});
