import { ForwardingExperts, type ExpertRouting } from '@expertmesh/routed-experts';

/** Wraps a backend to count, per MoE layer call, the distinct experts chosen and the time it took. */
export class CountingExperts extends ForwardingExperts {
  distinctExpertCalls = 0;
  layerCalls = 0;
  layerMs = 0;

  override async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    this.distinctExpertCalls += new Set(routing.expertIds).size;
    this.layerCalls++;
    const t0 = performance.now();
    const out = await this.inner.compute(layer, hidden, routing);
    this.layerMs += performance.now() - t0;
    return out;
  }

  reset(): void {
    this.distinctExpertCalls = 0;
    this.layerCalls = 0;
    this.layerMs = 0;
  }
}
