/**
 * Tokens routed to each expert of each MoE layer over a sliding window: a ring of time buckets, so
 * old traffic falls out as it ages and the planner sees the load as it is now, not since start.
 * Adding is a few array writes (it runs on the hot path, once per layer and step).
 */
export class ExpertLoadWindow {
  private readonly buckets: Float64Array[];
  private readonly bucketMs: number;
  private readonly layerIndex: ReadonlyMap<number, number>;
  private bucketAt = -1;

  constructor(
    private readonly moeLayers: readonly number[],
    private readonly experts: number,
    readonly windowMs: number,
    bucketCount = 12,
    private readonly now: () => number = Date.now,
  ) {
    if (!(windowMs > 0)) throw new RangeError('the load window must be longer than 0 ms');
    this.bucketMs = windowMs / bucketCount;
    this.buckets = Array.from({ length: bucketCount }, () => new Float64Array(moeLayers.length * experts));
    this.layerIndex = new Map(moeLayers.map((l, i) => [l, i]));
  }

  /** Counts `expertIds` (one entry per token and chosen expert) for `layer`. */
  add(layer: number, expertIds: ArrayLike<number>): void {
    const li = this.layerIndex.get(layer);
    if (li === undefined) return;
    const bucket = this.current();
    const base = li * this.experts;
    for (let i = 0; i < expertIds.length; i++) {
      const e = expertIds[i]!;
      if (e >= 0 && e < this.experts) bucket[base + e]! += 1;
    }
  }

  /** Tokens per expert of each layer within the window. */
  snapshot(): Map<number, number[]> {
    this.current();
    const out = new Map<number, number[]>();
    this.moeLayers.forEach((layer, li) => {
      const row = new Array<number>(this.experts).fill(0);
      for (const b of this.buckets) for (let e = 0; e < this.experts; e++) row[e]! += b[li * this.experts + e]!;
      out.set(layer, row);
    });
    return out;
  }

  /** Tokens in the window, all layers together. */
  total(): number {
    this.current();
    let sum = 0;
    for (const b of this.buckets) for (const v of b) sum += v;
    return sum;
  }

  /** The bucket of this moment, clearing those the window has left behind since the last call. */
  private current(): Float64Array {
    const at = Math.floor(this.now() / this.bucketMs);
    if (this.bucketAt < 0) this.bucketAt = at;
    const stale = Math.min(this.buckets.length, at - this.bucketAt);
    for (let k = 1; k <= stale; k++) this.buckets[(this.bucketAt + k) % this.buckets.length]!.fill(0);
    this.bucketAt = Math.max(this.bucketAt, at);
    return this.buckets[this.bucketAt % this.buckets.length]!;
  }
}
