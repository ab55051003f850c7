import type { DispatchObserver } from './dispatch-observers.js';
import type { ExpertRouting } from './expert-routing.js';

/** A process holding routed experts, as the cluster view shows it. */
export interface ExpertHolderState {
  readonly address: string;
  readonly healthy: boolean;
  readonly shardId: string;
  /** Experts held, summed over layers, and the MoE layers they are in. */
  readonly experts: number;
  readonly layers: number;
  /** Bytes of expert weights held, in `weightFormat` (e.g. "float8e4m3fn+block128x128"; "" when unknown). */
  readonly weightBytes: number;
  readonly weightFormat: string;
  readonly residentBytes: number;
}

/** The placement plan's version and the holders still serving an older one. */
export interface PlanStatus {
  readonly version: number;
  readonly lagging: readonly string[];
}

/**
 * Where the routed experts of the MoE layers run: in this process, or on expert shards over the
 * network. The model calls `compute` once per MoE layer and step and does not know which. Built
 * before the model and handed to it; whoever needs to watch the experts (metrics, the cluster view,
 * tests) does so through this interface, never by the backend's class.
 */
export interface RoutedExpertsBackend {
  /**
   * Σ_j weight_j · Expert_j(x) for every token, over its routed experts: returns [T, hidden].
   * `hidden` is the post-attention-normed input [T, hidden] of the layer's FFN.
   */
  compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array>;
  /** Sees every layer's routing and every call to a remote holder; returns an unsubscribe function. */
  observe(observer: DispatchObserver): () => void;
  /** null when every routed expert has a holder that can serve; otherwise why not (for readiness probes). */
  notReadyReason(): Promise<string | null>;
  /** The processes holding experts elsewhere (none when they all run here), asked within `timeoutMs`. */
  holders(timeoutMs: number): Promise<readonly ExpertHolderState[]>;
  /** When a registry places the experts: the plan version and who is not on it yet. */
  planStatus(): PlanStatus | null;
  /** Bytes of expert weights held in this process, in the format held (0 when they all run elsewhere). */
  heldWeightBytes(): number;
  close(): Promise<void>;
}
