import type { ModelConfig } from '@expertmesh/model-config';

/**
 * kv_b_proj is [heads·(nope + v), kv_lora_rank]: per head, `nope` rows that lift the latent to the
 * key and `v` rows that lift it to the value. Absorbed attention uses them apart:
 *   keyUp   [heads, nope, rank]  multiplies the query   (q_latent = q_nope · keyUp)
 *   valueUpT [heads, rank, v]    multiplies the output  (o = o_latent · valueUpT)
 */
export function splitKvB(config: ModelConfig, kvB: Float32Array): { keyUp: Float32Array; valueUpT: Float32Array } {
  const { numHeads: nH, qkNopeHeadDim: nope, vHeadDim: v, kvLoraRank: R } = config;
  const keyUp = new Float32Array(nH * nope * R);
  const valueUpT = new Float32Array(nH * R * v);
  for (let h = 0; h < nH; h++) {
    const head = h * (nope + v) * R;
    keyUp.set(kvB.subarray(head, head + nope * R), h * nope * R);
    for (let j = 0; j < v; j++) {
      const row = head + (nope + j) * R;
      for (let r = 0; r < R; r++) valueUpT[h * R * v + r * v + j] = kvB[row + r]!;
    }
  }
  return { keyUp, valueUpT };
}
