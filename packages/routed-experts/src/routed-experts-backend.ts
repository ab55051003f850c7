import type { ExpertRouting } from './expert-routing.js';

/**
 * Where the routed experts of the MoE layers run: in this process, or on expert shards over the
 * network. The model calls this once per MoE layer and step and does not know which.
 */
export interface RoutedExpertsBackend {
  /**
   * Σ_j weight_j · Expert_j(x) for every token, over its routed experts: returns [T, hidden].
   * `hidden` is the post-attention-normed input [T, hidden] of the layer's FFN.
   */
  compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array>;
  close(): Promise<void>;
}
