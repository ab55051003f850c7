import { describe, expect, it } from 'vitest';
import { offThread } from '../../../test/helpers/off-thread.js';
import { EXPERTS, H, I, input, pattern, used } from './real-width-experts-job.js';

/**
 * A MoE layer graph of 32 DeepSeek-R1-size experts (3 × 7168 × 2048 each) held as float32: 5.6 GB of
 * weights, past protobuf's 2 GB limit (the weights past 1 GiB are fed at run time). Weights follow a
 * cheap pattern so the expected outputs can be computed exactly in float64. The graph is built and run
 * on a worker thread (real-width-experts-job.ts): its session creation holds a thread for over a minute
 * on a busy machine, long enough to time out this test worker's calls to its runner.
 */
describe('a MoE layer of 32 real-size float32 experts (5.6 GB of weights)', () => {
  it('runs every expert on its own tokens', async () => {
    const y = await offThread<Float32Array>(new URL('./real-width-experts-job.ts', import.meta.url), 'runExpertsLayer', null);
    const rows = Array.from({ length: EXPERTS }, (_, e) => e).filter(used).length;
    expect(rows).toBe(4);
    expect(y.length).toBe(rows * H);
    // Expected SwiGLU in float64: down · (silu(g) ⊙ g) with g = gate · x (gate and up share values here).
    const g = new Float64Array(I);
    for (let r = 0; r < I; r++) for (let c = 0; c < H; c++) g[r]! += pattern(r, c) * input[c]!;
    const act = g.map((v) => (v / (1 + Math.exp(-v))) * v);
    for (let k = 0; k < rows; k++) {
      for (const row of [0, 1, 5000, H - 1]) {
        let out = 0;
        for (let c = 0; c < I; c++) out += pattern(row + 7, c) * act[c]!;
        expect(Math.abs(y[k * H + row]! - out)).toBeLessThan(1e-4 * Math.max(1, Math.abs(out)));
      }
    }
  });
});
