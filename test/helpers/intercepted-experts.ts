import { ForwardingExperts, type ExpertRouting, type RoutedExpertsBackend } from '@expertmesh/routed-experts';

/**
 * A backend that runs `before(call, layer)` ahead of each MoE layer's experts (calls counted from 1):
 * it can hold a step in the middle (await something) or fail it there (throw).
 */
export class InterceptedExperts extends ForwardingExperts {
  calls = 0;

  constructor(
    inner: RoutedExpertsBackend,
    private readonly before: (call: number, layer: number) => Promise<void> | void,
  ) {
    super(inner);
  }

  override async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    await this.before(++this.calls, layer);
    return this.inner.compute(layer, hidden, routing);
  }
}

/** A promise with its resolve, to hold a step until the test lets it go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
