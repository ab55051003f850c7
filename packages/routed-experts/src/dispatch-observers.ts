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
  /** What the holder reports between taking the request and starting its experts: checks, decoding, waiting its turn. */
  readonly queueMicros: number;
  readonly roundTripMs: number;
  /** Whether the call carried rows another holder failed in the same step (failover). */
  readonly resent: boolean;
  /**
   * Whether the call was a hedge: rows of another holder's late call, sent to their other holders too
   * (see DispatchHedge; its answer is discarded when the late one comes first). A hedge is not a
   * failure: on a busy machine any call may be late. A hedge of resent rows is both.
   */
  readonly hedge: boolean;
}

/**
 * A hedge: a call to `shard` was late (no answer after `afterMs`), so its rows were sent to their other
 * holders too. `sent` when that happens, then one of: `won` (the hedge answered first; the late
 * answer is discarded), `wasted` (the late shard answered first; the hedge's answers are discarded),
 * `failed` (a hedge call failed; the late call's answer is used).
 */
export interface DispatchHedge {
  readonly layer: number;
  readonly shard: string;
  readonly rows: number;
  readonly afterMs: number;
  readonly outcome: 'sent' | 'won' | 'wasted' | 'failed';
}

/** Why a holder became suspect: a failed call or broken connection, a call past its deadline, or a non-finite result. */
export type SuspicionReason = 'failed' | 'deadline' | 'non_finite';

/** A remote holder becoming suspect (its work goes elsewhere) or healthy again (its health check passed). */
export interface HolderHealthChange {
  readonly shard: string;
  readonly suspect: boolean;
  readonly reason: SuspicionReason | null;
  readonly error: Error | null;
  /** For a recovery: how long the holder was suspect. */
  readonly suspectMs: number;
  /**
   * The holder left the router's view while suspect (its registry record went, e.g. its lease ran
   * out): it is no longer judged. If it registers again it is a new holder, not suspect.
   */
  readonly gone?: boolean;
}

/** What a backend reports to those watching it. Both callbacks run synchronously on the hot path: keep them cheap. */
export interface DispatchObserver {
  /** Every MoE layer's routing, before its experts run. */
  readonly onRouting?: (layer: number, routing: ExpertRouting) => void;
  /** Every call to a remote holder, once it answered. */
  readonly onCall?: (call: DispatchCall) => void;
  /** A remote holder becoming suspect or healthy again. */
  readonly onHolderHealth?: (change: HolderHealthChange) => void;
  /** A late call hedged on other holders, and how the hedge came out. */
  readonly onHedge?: (hedge: DispatchHedge) => void;
  /**
   * Holders may have been added: a shard joined or came back, or passed its health check. A step that
   * failed for want of a holder can be tried again now rather than after its back-off.
   */
  readonly onHoldersAdded?: () => void;
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

  hedge(hedge: DispatchHedge): void {
    for (const o of this.observers) o.onHedge?.(hedge);
  }

  holderHealth(change: HolderHealthChange): void {
    for (const o of this.observers) o.onHolderHealth?.(change);
    if (!change.suspect && !change.gone) this.holdersAdded();
  }

  holdersAdded(): void {
    for (const o of this.observers) o.onHoldersAdded?.();
  }
}
