import type { ExpertRouting, RoutedExpertsBackend } from '@expertmesh/model';

/** Wraps a backend to count, per MoE layer call, the distinct experts the tokens chose. */
export class CountingExperts implements RoutedExpertsBackend {
  distinctExpertCalls = 0;
  layerCalls = 0;

  constructor(private readonly inner: RoutedExpertsBackend) {}

  compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    this.distinctExpertCalls += new Set(routing.expertIds).size;
    this.layerCalls++;
    return this.inner.compute(layer, hidden, routing);
  }

  reset(): void {
    this.distinctExpertCalls = 0;
    this.layerCalls = 0;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
