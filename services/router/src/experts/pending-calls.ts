import type { RunExpertsResponse__Output } from '@expertmesh/wire';

interface Pending<Carrier> {
  readonly resolve: (r: RunExpertsResponse__Output) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
  /** What the request went out on (a gRPC stream, a frames socket): a broken carrier fails only its own calls. */
  readonly carrier: Carrier;
}

/** Calls sent on a multiplexed link and not yet answered, by request id, each with its deadline timer. */
export class PendingCalls<Carrier> {
  private readonly calls = new Map<number, Pending<Carrier>>();

  add(requestId: number, call: Pending<Carrier>): void {
    this.calls.set(requestId, call);
  }

  /** Removes and returns the call `requestId` sent on `carrier` (its timer stopped); null when it settled already. */
  take(requestId: number, carrier: Carrier): Pending<Carrier> | null {
    const p = this.calls.get(requestId);
    if (!p || p.carrier !== carrier) return null;
    this.calls.delete(requestId);
    clearTimeout(p.timer);
    return p;
  }

  /** Forgets a call whose deadline passed; false when it settled already. */
  expire(requestId: number): boolean {
    return this.calls.delete(requestId);
  }

  /** Fails every call (of `carrier` only, when given) with `error`. */
  failAll(error: Error, carrier?: Carrier): void {
    for (const [id, p] of this.calls) {
      if (carrier !== undefined && p.carrier !== carrier) continue;
      this.calls.delete(id);
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}
