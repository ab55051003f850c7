/** Synthetic routed experts and routings for the expert benchmarks (timing does not depend on the values). */
import type { ModelConfig } from '@expertmesh/model-config';
import type { ExpertWeightSource } from '@expertmesh/local-experts';
import { QUANTIZED_FORMATS, type WeightDtype } from '@expertmesh/model-weights';
import { memoryWeight, quantizeBlockwise, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import type { ExpertPairs } from '@expertmesh/routed-experts';

export type Format = 'float32' | 'int8' | 'int4';

/** xorshift32 in [0, 1). */
export function random(seed: number): () => number {
  let s = (seed * 2654435761) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** Seeded values in [-1/16, 1/16): a stand-in for trained weights (timing does not depend on them). */
export function seeded(n: number, seed: number): Float32Array {
  const next = random(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() - 0.5) / 8;
  return out;
}

export function syntheticExperts(config: ModelConfig, format: Format): ExpertWeightSource {
  const H = config.hiddenSize;
  const I = config.moeIntermediateSize;
  const matrix = (rows: number, cols: number, seed: number): WeightData => {
    const w = seeded(rows * cols, seed);
    if (format === 'float32') return memoryWeight(w, [rows, cols]);
    const { bits, block } = QUANTIZED_FORMATS[format];
    return { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(w, rows, cols, bits, block) };
  };
  return {
    expertDtype: format satisfies WeightDtype,
    routedExpert: async (layer, e): Promise<SwigluWeights> => ({
      gate: matrix(I, H, 3 * (layer * 1000 + e) + 1),
      up: matrix(I, H, 3 * (layer * 1000 + e) + 2),
      down: matrix(H, I, 3 * (layer * 1000 + e) + 3),
      hidden: H,
      intermediate: I,
    }),
  };
}

/** `batch` tokens, each choosing topK distinct experts among `among` (pairs in token order, weights summing to 1). */
export function randomPairs(batch: number, topK: number, among: readonly number[], seed: number): ExpertPairs {
  const n = batch * topK;
  const pairs = { tokenRows: new Int32Array(n), expertIds: new Int32Array(n), weights: new Float32Array(n) };
  const next = random(seed);
  let k = 0;
  for (let t = 0; t < batch; t++) {
    const chosen = new Set<number>();
    while (chosen.size < topK) chosen.add(among[Math.floor(next() * among.length)]!);
    for (const e of chosen) {
      pairs.tokenRows[k] = t;
      pairs.expertIds[k] = e;
      pairs.weights[k++] = 1 / topK;
    }
  }
  return pairs;
}
