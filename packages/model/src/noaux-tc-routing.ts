import type { ModelConfig } from '@expertmesh/model-config';
import type { ExpertRouting } from '@expertmesh/routed-experts';

/**
 * DeepSeek-V3's "noaux_tc" router over the sigmoid scores s [T, E], in float32 as the routing graph
 * (graphs/routing-graph.ts) computes it — for a decode step of a few tokens, where the graph's twenty small
 * operators cost more than the arithmetic:
 *   c = s + e_score_correction_bias; group score = sum of the two best c of each of n_group groups;
 *   keep the topk_group best groups; ids = top num_experts_per_tok of the kept c, best first (ties: lower index);
 *   weights = s at those experts, / (their sum + 1e-20) when norm_topk_prob, × routed_scaling_factor.
 */
export function noauxTcRouting(scores: Float32Array, T: number, bias: Float32Array, config: ModelConfig): ExpertRouting {
  const { nRoutedExperts: E, numExpertsPerTok: k, nGroup: G, topkGroup } = config;
  const size = E / G;
  const expertIds = new Int32Array(T * k);
  const weights = new Float32Array(T * k);
  const corrected = new Float32Array(E);
  const groupScores = new Float32Array(G);
  const keptGroup = new Uint8Array(G);
  const taken = new Uint8Array(E);
  for (let t = 0; t < T; t++) {
    const s = scores.subarray(t * E, (t + 1) * E);
    for (let e = 0; e < E; e++) corrected[e] = s[e]! + bias[e]!;
    keptGroup.fill(topkGroup < G ? 0 : 1);
    if (topkGroup < G) {
      for (let g = 0; g < G; g++) {
        // The two best of the group (the first of equal values first, as TopK), summed in float32.
        let first = -Infinity;
        let second = -Infinity;
        for (let e = g * size; e < (g + 1) * size; e++) {
          const v = corrected[e]!;
          if (v > first) {
            second = first;
            first = v;
          } else if (v > second) second = v;
        }
        groupScores[g] = size >= 2 ? first + second : first;
      }
      for (let n = 0; n < topkGroup; n++) {
        let best = -1;
        for (let g = 0; g < G; g++) if (!keptGroup[g] && (best < 0 || groupScores[g]! > groupScores[best]!)) best = g;
        keptGroup[best] = 1;
      }
    }
    taken.fill(0);
    let sum = 0;
    for (let n = 0; n < k; n++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (keptGroup[Math.floor(e / size)] && !taken[e] && (best < 0 || corrected[e]! > corrected[best]!)) best = e;
      taken[best] = 1;
      expertIds[t * k + n] = best;
      weights[t * k + n] = s[best]!;
      sum = Math.fround(sum + s[best]!);
    }
    const denominator = Math.fround(sum + 1e-20);
    for (let n = 0; n < k; n++) {
      const w = config.normTopkProb ? Math.fround(weights[t * k + n]! / denominator) : weights[t * k + n]!;
      weights[t * k + n] = Math.fround(w * config.routedScalingFactor);
    }
  }
  return { numTokens: T, topK: k, expertIds, weights };
}
