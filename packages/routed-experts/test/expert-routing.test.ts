import { describe, expect, it } from 'vitest';
import { parseModelConfig, getPreset } from '@expertmesh/model-config';
import { routeTokens } from '../src/index.js';

// 16 experts in 4 groups of 4; 2 groups kept; 4 experts chosen.
const config = parseModelConfig(getPreset('tiny').config);

describe('noaux_tc routing', () => {
  it('chooses only from the topk_group groups with the best top-2 sums of corrected scores', () => {
    const scores = new Float32Array(16).fill(0.1);
    // Group 0 has one very strong expert but a weak second: sum 0.95 + 0.1.
    scores[0] = 0.95;
    // Groups 2 and 3 have two good experts each: sums 1.2 and 1.1.
    scores.set([0.6, 0.6], 8);
    scores.set([0.55, 0.55], 12);
    const routing = routeTokens(config, scores, new Float32Array(16), 1);
    const chosen = [...routing.expertIds].sort((a, b) => a - b);
    expect(chosen.every((e) => e >= 8)).toBe(true);
    expect(chosen).not.toContain(0);
  });

  it('chooses by corrected scores but weighs by the plain sigmoid scores, normalised and scaled', () => {
    const scores = Float32Array.from({ length: 16 }, (_, i) => 0.2 + 0.01 * i);
    const bias = new Float32Array(16);
    bias[1] = 1; // lifts expert 1 (and group 0) into the choice
    const r = routeTokens(config, scores, bias, 1);
    expect(r.expertIds).toContain(1);
    const w = Array.from(r.weights);
    const sum = w.reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(config.routedScalingFactor, 5);
    const i1 = Array.from(r.expertIds).indexOf(1);
    const plain = Array.from(r.expertIds).reduce((a, e) => a + scores[e]!, 0);
    expect(w[i1]).toBeCloseTo((scores[1]! / plain) * config.routedScalingFactor, 5);
  });

  it('routes each token independently', () => {
    const scores = new Float32Array(32).fill(0.1);
    scores[3] = 0.9;
    scores[16 + 14] = 0.9;
    const r = routeTokens(config, scores, new Float32Array(16), 2);
    expect(r.expertIds[0]).toBe(3);
    expect(r.expertIds[4]).toBe(14);
  });
});
