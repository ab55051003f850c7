import type { ModelConfig } from '@expertmesh/model-config';
import { widened, type OnnxModelBuilder, type WeightData } from '@expertmesh/tensor-ops';

/**
 * kv_b_proj is [heads·(nope + v), kv_lora_rank]: per head, `nope` rows that lift the latent to the
 * key and `v` rows that lift it to the value. Absorbed attention uses them apart:
 *   keyUp   [heads, nope, rank]  multiplies the query   (q_latent = q_nope · keyUp)
 *   valueUp [heads, v, rank]     multiplies the output  (o = o_latent · valueUpᵀ)
 * Both are views of the (widened) weight by head, so the stored weight is all the process holds.
 */
export function splitKvB(b: OnnxModelBuilder, config: ModelConfig, kvB: WeightData): { keyUp: string; valueUp: string } {
  const { numHeads: nH, qkNopeHeadDim: nope, vHeadDim: v, kvLoraRank: R } = config;
  const byHead = b.op('Reshape', [widened(b, kvB, 'kv_b_proj'), b.int64s([nH, nope + v, R])]);
  const [keyUp, valueUp] = b.opMulti('Split', [byHead, b.int64s([nope, v])], { axis: 1 }, { outputs: 2 });
  return { keyUp: keyUp!, valueUp: valueUp! };
}
