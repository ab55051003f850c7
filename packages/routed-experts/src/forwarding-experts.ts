import type { DispatchObserver } from './dispatch-observers.js';
import type { ExpertRouting } from './expert-routing.js';
import type { ExpertHolderState, PlanStatus, RoutedExpertsBackend } from './routed-experts-backend.js';

/** A backend that hands everything to another: the base of wrappers that count, delay or fail calls. */
export class ForwardingExperts implements RoutedExpertsBackend {
  constructor(protected readonly inner: RoutedExpertsBackend) {}

  compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    return this.inner.compute(layer, hidden, routing);
  }

  observe(observer: DispatchObserver): () => void {
    return this.inner.observe(observer);
  }

  notReadyReason(): Promise<string | null> {
    return this.inner.notReadyReason();
  }

  holders(timeoutMs: number): Promise<readonly ExpertHolderState[]> {
    return this.inner.holders(timeoutMs);
  }

  planStatus(): PlanStatus | null {
    return this.inner.planStatus();
  }

  heldWeightBytes(): number {
    return this.inner.heldWeightBytes();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
