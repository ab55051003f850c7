import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, int32Data } from '@expertmesh/tensor-ops';
import { buildRoutingGraph } from '../src/graphs/routing-graph.js';
import { noauxTcRouting } from '../src/noaux-tc-routing.js';

// tiny: 16 experts in 4 groups of 4; 2 groups kept; 4 experts chosen. demo: 64 experts, 8 groups, 4 kept, 8 chosen.
const tiny = parseModelConfig(getPreset('tiny').config);
const demo = parseModelConfig(getPreset('demo').config);

async function route(config: ModelConfig, scores: Float32Array, bias: Float32Array): Promise<{ ids: Int32Array; weights: Float32Array }> {
  const graph = await Graph.create('routing', buildRoutingGraph(config, bias));
  try {
    const T = scores.length / config.nRoutedExperts;
    const out = await graph.run({ scores: f32(scores, [T, config.nRoutedExperts]) });
    return { ids: int32Data(out.expert_ids, 'routing', 'expert_ids'), weights: floatData(out.expert_weights, 'routing', 'expert_weights') };
  } finally {
    await graph.release();
  }
}

/** noaux_tc in float64, written as plainly as DeepSeek's reference code: the graph must agree with it. */
function routeF64(config: ModelConfig, s: Float32Array, bias: Float32Array): { ids: number[]; weights: number[] } {
  const E = config.nRoutedExperts;
  const size = E / config.nGroup;
  const corrected = Array.from(s, (v, e) => v + bias[e]!);
  const byValue = (values: number[], allowed: (i: number) => boolean, k: number): number[] =>
    values
      .map((v, i) => ({ v, i }))
      .filter(({ i }) => allowed(i))
      .sort((a, b) => b.v - a.v || a.i - b.i)
      .slice(0, k)
      .map(({ i }) => i);
  const groupScores = Array.from({ length: config.nGroup }, (_, g) => {
    const top = corrected.slice(g * size, (g + 1) * size).sort((a, b) => b - a);
    return top[0]! + (top[1] ?? 0);
  });
  const kept = new Set(byValue(groupScores, () => true, config.topkGroup));
  const ids = byValue(corrected, (e) => kept.has(Math.floor(e / size)), config.numExpertsPerTok);
  const sum = ids.reduce((a, e) => a + s[e]!, 0) + 1e-20;
  return { ids, weights: ids.map((e) => (config.normTopkProb ? s[e]! / sum : s[e]!) * config.routedScalingFactor) };
}

/** Deterministic pseudo-random floats in [lo, hi). */
function randoms(n: number, seed: number, lo = 0, hi = 1): Float32Array {
  let x = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * x) / 2 ** 32;
  });
}

describe('noaux_tc routing in the graph', () => {
  it('chooses only from the topk_group groups with the best top-2 sums of corrected scores', async () => {
    const scores = new Float32Array(16).fill(0.1);
    // Group 0 has one very strong expert but a weak second: sum 0.95 + 0.1.
    scores[0] = 0.95;
    // Groups 2 and 3 have two good experts each: sums 1.2 and 1.1.
    scores.set([0.6, 0.6], 8);
    scores.set([0.55, 0.55], 12);
    const { ids } = await route(tiny, scores, new Float32Array(16));
    const chosen = [...ids].sort((a, b) => a - b);
    expect(chosen.every((e) => e >= 8)).toBe(true);
    expect(chosen).not.toContain(0);
  });

  it('chooses by corrected scores but weighs by the plain sigmoid scores, normalised and scaled', async () => {
    const scores = Float32Array.from({ length: 16 }, (_, i) => 0.2 + 0.01 * i);
    const bias = new Float32Array(16);
    bias[1] = 1; // lifts expert 1 (and group 0) into the choice
    const r = await route(tiny, scores, bias);
    expect(r.ids).toContain(1);
    const w = Array.from(r.weights);
    expect(w.reduce((a, b) => a + b, 0)).toBeCloseTo(tiny.routedScalingFactor, 5);
    const i1 = Array.from(r.ids).indexOf(1);
    const plain = Array.from(r.ids).reduce((a, e) => a + scores[e]!, 0);
    expect(w[i1]).toBeCloseTo((scores[1]! / plain) * tiny.routedScalingFactor, 5);
  });

  it('routes each token independently', async () => {
    const scores = new Float32Array(32).fill(0.1);
    scores[3] = 0.9;
    scores[16 + 14] = 0.9;
    const r = await route(tiny, scores, new Float32Array(16));
    expect(r.ids[0]).toBe(3);
    expect(r.ids[4]).toBe(14);
  });

  it('ties go to the lower index, among groups and among experts', async () => {
    // Every score equal: groups 0 and 1 are kept, and their first experts chosen in index order.
    const flat = await route(tiny, new Float32Array(16).fill(0.5), new Float32Array(16));
    expect([...flat.ids]).toEqual([0, 1, 2, 3]);
    // Two tied best experts in different groups: the lower index first.
    const scores = new Float32Array(16).fill(0.1);
    scores[13] = 0.8;
    scores[5] = 0.8;
    scores[6] = 0.3;
    scores[14] = 0.3;
    const tied = await route(tiny, scores, new Float32Array(16));
    expect([...tied.ids].slice(0, 4)).toEqual([5, 13, 6, 14]);
  });

  it('agrees with a float64 reference on random scores and biases: same experts, weights within 1e-6', async () => {
    for (const [config, seed] of [
      [tiny, 1],
      [demo, 2],
    ] as const) {
      const T = 64;
      const E = config.nRoutedExperts;
      const scores = randoms(T * E, seed, 0.01, 0.99);
      const bias = randoms(E, seed + 10, -0.05, 0.05);
      const r = await route(config, scores, bias);
      const k = config.numExpertsPerTok;
      for (let t = 0; t < T; t++) {
        const want = routeF64(config, scores.subarray(t * E, (t + 1) * E), bias);
        expect([...r.ids.subarray(t * k, (t + 1) * k)]).toEqual(want.ids);
        want.weights.forEach((w, j) => expect(Math.abs(r.weights[t * k + j]! - w) / w).toBeLessThan(1e-6));
      }
    }
  });
});

/** The same router in JavaScript (native-router: a decode step's routing off the layer graph) must be the graph's. */
describe('noaux_tc routing in JavaScript', () => {
  it('gives the graph\'s experts in the graph\'s order and its weights within 1e-6 (another float32 summation order), on random scores, ties and flat scores', async () => {
    const cases: [ModelConfig, Float32Array, Float32Array][] = [];
    for (const [config, seed] of [
      [tiny, 3],
      [demo, 4],
    ] as const) {
      const E = config.nRoutedExperts;
      cases.push([config, randoms(48 * E, seed, 0.01, 0.99), randoms(E, seed + 10, -0.05, 0.05)]);
      cases.push([config, new Float32Array(3 * E).fill(0.5), new Float32Array(E)]);
      // Coarse scores: many exact ties among experts and among groups' sums.
      cases.push([config, randoms(16 * E, seed + 20, 0, 1).map((v) => Math.round(v * 4) / 4), new Float32Array(E)]);
    }
    for (const [config, scores, bias] of cases) {
      const T = scores.length / config.nRoutedExperts;
      const graph = await route(config, scores, bias);
      const js = noauxTcRouting(scores, T, bias, config);
      expect(js.numTokens).toBe(T);
      expect([...js.expertIds]).toEqual([...graph.ids]);
      graph.weights.forEach((w, i) => expect(Math.abs(js.weights[i]! - w)).toBeLessThanOrEqual(1e-6 * Math.abs(w)));
    }
  });
});
