import type { ExpertRouting } from './expert-routing.js';

/** One call to a remote holder of experts, as metrics and tests see it. */
export interface DispatchCall {
  readonly layer: number;
  /** The holder's address. */
  readonly shard: string;
  readonly tokens: number;
  readonly pairs: number;
  /** Bytes of hidden states sent (data and FP8 row scales), of the pair fields, and of the answer. */
  readonly hiddenBytes: number;
  readonly pairBytes: number;
  readonly responseBytes: number;
  readonly computeMicros: number;
  readonly roundTripMs: number;
}

/** What a backend reports to those watching it. Both callbacks run synchronously on the hot path: keep them cheap. */
export interface DispatchObserver {
  /** Every MoE layer's routing, before its experts run. */
  readonly onRouting?: (layer: number, routing: ExpertRouting) => void;
  /** Every call to a remote holder, once it answered. */
  readonly onCall?: (call: DispatchCall) => void;
}

/** The observers of one backend. */
export class DispatchObservers {
  private readonly observers = new Set<DispatchObserver>();

  add(observer: DispatchObserver): () => void {
    this.observers.add(observer);
    return () => void this.observers.delete(observer);
  }

  /** Whether anyone wants calls reported (so building the record can be skipped). */
  get watchingCalls(): boolean {
    for (const o of this.observers) if (o.onCall) return true;
    return false;
  }

  routing(layer: number, routing: ExpertRouting): void {
    for (const o of this.observers) o.onRouting?.(layer, routing);
  }

  call(call: DispatchCall): void {
    for (const o of this.observers) o.onCall?.(call);
  }
}
