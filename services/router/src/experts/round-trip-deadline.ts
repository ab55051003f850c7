/** How long the router waits for a shard's answer before it treats the shard as suspect. */
export interface DeadlinePolicy {
  /** Floor of the adaptive deadline (--dispatch-deadline-min-ms). */
  readonly minMs: number;
  /** Ceiling, and the deadline until a shard has a history (--dispatch-deadline-ms). */
  readonly maxMs: number;
  /** The deadline is this many times the shard's recent p99 round trip (--dispatch-deadline-p99-multiple). */
  readonly p99Multiple: number;
}

export const DEFAULT_DEADLINE: DeadlinePolicy = { minMs: 200, maxMs: 30_000, p99Multiple: 4 };

/**
 * When the router hedges a late call: a call whose every row has another usable holder and which has
 * not answered after `p99Multiple` × the shard's recent p99 round trip (at least `minMs`) is sent to
 * those holders too, and the first answer is used (--dispatch-hedge-p99-multiple, 0 = never;
 * --dispatch-hedge-min-ms).
 */
export interface HedgePolicy {
  readonly p99Multiple: number;
  readonly minMs: number;
}

export const DEFAULT_HEDGE: HedgePolicy = { p99Multiple: 1.5, minMs: 10 };

/** Round trips remembered per shard, and how many are needed before the deadline adapts. */
const WINDOW = 256;
const MIN_SAMPLES = 8;
/**
 * A call's fixed cost in token-equivalents: round trips are compared per (tokens + this), so a
 * 512-token prefill chunk gets a longer deadline than an 8-token decode call without the small
 * calls' fixed cost inflating the big ones' much.
 */
const FIXED_COST_TOKENS = 32;

/** How many times the adaptive deadline a call gets whose rows no other usable holder could take. */
export const LONE_HOLDER_FACTOR = 10;

/**
 * One shard's deadline: `p99Multiple` × its recent p99 round trip scaled to the call's size,
 * clamped to [minMs, maxMs]. Recording is O(1); the p99 is recomputed at most every 16 samples.
 */
export class RoundTripDeadline {
  private readonly perCost = new Float64Array(WINDOW);
  private count = 0;
  private next = 0;
  private p99: number | null = null;
  private sinceSort = 0;

  constructor(private readonly policy: DeadlinePolicy) {}

  record(roundTripMs: number, tokens: number): void {
    this.perCost[this.next] = roundTripMs / (tokens + FIXED_COST_TOKENS);
    this.next = (this.next + 1) % WINDOW;
    this.count = Math.min(this.count + 1, WINDOW);
    if (++this.sinceSort >= 16 || this.p99 === null) this.p99 = null;
  }

  /**
   * The deadline in ms for a call carrying `tokens` token rows. `movable` says whether other holders
   * could take the call's rows: when none could, suspecting the shard early cannot help (it would only
   * turn a slow answer, e.g. a shard compiling the experts of a new plan, into a failed step and a
   * retry), so such a call gets LONE_HOLDER_FACTOR times the time.
   */
  forCall(tokens: number, movable = true): number {
    const { minMs, maxMs, p99Multiple } = this.policy;
    const p99 = this.recentP99(tokens);
    if (p99 === null) return maxMs;
    const adaptive = Math.max(minMs, p99Multiple * p99);
    return Math.min(maxMs, movable ? adaptive : LONE_HOLDER_FACTOR * adaptive);
  }

  /**
   * When a call carrying `tokens` rows counts as late, so that its rows are sent to their other
   * holders too: `hedge.p99Multiple` × the recent p99 round trip for its size, at least `hedge.minMs`;
   * null (no hedge) while the shard has too short a history, or with hedging off (multiple 0).
   */
  hedgeAfter(tokens: number, hedge: HedgePolicy): number | null {
    if (hedge.p99Multiple <= 0) return null;
    const p99 = this.recentP99(tokens);
    return p99 === null ? null : Math.max(hedge.minMs, hedge.p99Multiple * p99);
  }

  /** The recent p99 round trip scaled to a call of `tokens` rows; null before MIN_SAMPLES calls. */
  private recentP99(tokens: number): number | null {
    if (this.count < MIN_SAMPLES) return null;
    if (this.p99 === null) {
      const sorted = this.perCost.slice(0, this.count).sort();
      this.p99 = sorted[Math.min(this.count - 1, Math.floor(this.count * 0.99))]!;
      this.sinceSort = 0;
    }
    return this.p99 * (tokens + FIXED_COST_TOKENS);
  }
}
