import type { ModelConfig } from '@expertmesh/model-config';

/** Which experts each token uses and with what weight: k entries per token, row-major [T, k]. */
export interface ExpertRouting {
  readonly numTokens: number;
  readonly topK: number;
  readonly expertIds: Int32Array;
  readonly weights: Float32Array;
}

/**
 * The same choice as flat (token row, expert, weight) pairs: the form experts are run in, and the
 * form a shard receives (only the pairs of experts it holds, rows renumbered to the tokens sent).
 */
export interface ExpertPairs {
  readonly tokenRows: Int32Array;
  readonly expertIds: Int32Array;
  readonly weights: Float32Array;
}

export function routingToPairs(routing: ExpertRouting): ExpertPairs {
  const n = routing.numTokens * routing.topK;
  const tokenRows = new Int32Array(n);
  for (let i = 0; i < n; i++) tokenRows[i] = Math.floor(i / routing.topK);
  return { tokenRows, expertIds: routing.expertIds, weights: routing.weights };
}

/**
 * DeepSeek-V3's "noaux_tc" router. Choice uses the bias-corrected scores s + b, restricted to the
 * `topk_group` groups whose two best corrected scores sum highest; the weights use the plain
 * sigmoid scores s, normalised over the chosen experts when `norm_topk_prob`, times
 * `routed_scaling_factor`. Ties go to the lower index.
 */
export function routeTokens(config: ModelConfig, scores: Float32Array, bias: Float32Array, numTokens: number): ExpertRouting {
  const E = config.nRoutedExperts;
  const k = config.numExpertsPerTok;
  const groupSize = E / config.nGroup;
  const expertIds = new Int32Array(numTokens * k);
  const weights = new Float32Array(numTokens * k);
  const corrected = new Float64Array(E);
  const groupScore = new Float64Array(config.nGroup);
  const allowed = new Uint8Array(config.nGroup);
  for (let t = 0; t < numTokens; t++) {
    const s = scores.subarray(t * E, (t + 1) * E);
    for (let e = 0; e < E; e++) corrected[e] = Math.fround(s[e]! + bias[e]!);
    for (let g = 0; g < config.nGroup; g++) {
      let best = -Infinity;
      let second = -Infinity;
      for (let e = g * groupSize; e < (g + 1) * groupSize; e++) {
        const v = corrected[e]!;
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) second = v;
      }
      groupScore[g] = best + second;
    }
    allowed.fill(0);
    for (const g of topIndices(groupScore, config.topkGroup, () => true)) allowed[g] = 1;
    const chosen = topIndices(corrected, k, (e) => allowed[Math.floor(e / groupSize)] === 1);
    let sum = 0;
    for (const e of chosen) sum += s[e]!;
    const norm = config.normTopkProb ? 1 / (sum + 1e-20) : 1;
    chosen.forEach((e, j) => {
      expertIds[t * k + j] = e;
      weights[t * k + j] = s[e]! * norm * config.routedScalingFactor;
    });
  }
  return { numTokens, topK: k, expertIds, weights };
}

/** Indices of the `count` largest values among those `eligible`, highest first, lower index on ties. */
function topIndices(values: Float64Array, count: number, eligible: (i: number) => boolean): number[] {
  const picked: number[] = [];
  const taken = new Uint8Array(values.length);
  for (let n = 0; n < count; n++) {
    let best = -1;
    for (let i = 0; i < values.length; i++) {
      if (taken[i] || !eligible(i)) continue;
      if (best < 0 || values[i]! > values[best]!) best = i;
    }
    if (best < 0) break;
    taken[best] = 1;
    picked.push(best);
  }
  return picked;
}
