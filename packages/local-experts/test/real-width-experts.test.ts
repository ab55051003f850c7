import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, i64, memoryWeight, type SwigluWeights } from '@expertmesh/tensor-ops';
import { buildRoutedExpertsGraph } from '../src/routed-experts-graph.js';

/**
 * A MoE layer graph of 32 DeepSeek-R1-size experts (3 × 7168 × 2048 each) held as float32: 5.6 GB of
 * weights, past protobuf's 2 GB limit (the weights past 1 GiB are fed at run time). Weights follow a
 * cheap pattern so the expected outputs can be computed exactly in float64.
 */
const r1 = parseModelConfig(getPreset('r1-slice').config);
const H = r1.hiddenSize;
const I = r1.moeIntermediateSize;

/** Weight value of row r, column c: multiples of 1/4096 in [-1/32, 1/32). */
const pattern = (r: number, c: number): number => (((r * 31 + c * 17) % 251) - 125) / 4096;
const input = Float32Array.from({ length: H }, (_, i) => Math.sin(i * 0.37));

describe('a MoE layer of 32 real-size float32 experts (5.6 GB of weights)', () => {
  it('runs every expert on its own tokens', async () => {
    // One set of values serves all 32 experts (the graph still holds 32 × 3 weights): the test needs 176 MB, not 5.6 GB.
    const gate = new Float32Array(I * H).map((_, i) => pattern(Math.floor(i / H), i % H));
    const down = new Float32Array(H * I).map((_, i) => pattern(Math.floor(i / I) + 7, i % I));
    const weights: SwigluWeights = { gate: memoryWeight(gate, [I, H]), up: memoryWeight(gate, [I, H]), down: memoryWeight(down, [H, I]), hidden: H, intermediate: I };
    const experts = Array.from({ length: 32 }, (_, id) => ({ id, weights }));
    const graph = await Graph.create('experts', buildRoutedExpertsGraph(experts, H, 'experts'));
    try {
      const used = (e: number): boolean => e % 8 === 3;
      // The used experts' rows, one after another, and each expert's row count.
      const x = new Float32Array(4 * H);
      for (let k = 0; k < 4; k++) x.set(input, k * H);
      const rows = i64(BigInt64Array.from({ length: 32 }, (_, e) => (used(e) ? 1n : 0n)), [32]);
      const y = floatData((await graph.run({ x: f32(x, [4, H]), rows })).y, 'experts', 'y');
      expect(y.length).toBe(4 * H);
      // Expected SwiGLU in float64: down · (silu(g) ⊙ g) with g = gate · x (gate and up share values here).
      const g = new Float64Array(I);
      for (let r = 0; r < I; r++) for (let c = 0; c < H; c++) g[r]! += pattern(r, c) * input[c]!;
      const act = g.map((v) => (v / (1 + Math.exp(-v))) * v);
      for (let k = 0; k < 4; k++) {
        for (const row of [0, 1, 5000, H - 1]) {
          let out = 0;
          for (let c = 0; c < I; c++) out += pattern(row + 7, c) * act[c]!;
          expect(Math.abs(y[k * H + row]! - out)).toBeLessThan(1e-4 * Math.max(1, Math.abs(out)));
        }
      }
    } finally {
      await graph.release();
    }
  });
});
