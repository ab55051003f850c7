import type { HolderHealthChange, SuspicionReason } from '@expertmesh/routed-experts';
import { RoundTripDeadline, type DeadlinePolicy } from './round-trip-deadline.js';
import type { ShardConnection } from './shard-connection.js';

export interface HealthProbe {
  /** Pause between health checks of a suspect shard. */
  readonly intervalMs: number;
  /** Deadline of one health check. */
  readonly timeoutMs: number;
}

export const DEFAULT_PROBE: HealthProbe = { intervalMs: 100, timeoutMs: 500 };

/**
 * The router's judgement of one shard. A suspect shard gets no work until its gRPC health check
 * (grpc.health.v1, over the same channel as the calls) answers SERVING again; the registry's record
 * plays no part in that, so a hung shard whose lease still lives is routed around at once.
 */
export class ShardHealth {
  readonly deadline: RoundTripDeadline;
  private suspectSince: number | null = null;
  /** What made the shard suspect, while it is. */
  private suspicion: Error | null = null;

  constructor(
    private readonly connection: ShardConnection,
    policy: DeadlinePolicy,
    private readonly probe: HealthProbe,
    private readonly onChange: (change: HolderHealthChange) => void,
  ) {
    this.deadline = new RoundTripDeadline(policy);
  }

  get suspect(): boolean {
    return this.suspectSince !== null;
  }

  /** Why the shard is suspect (null when it is not). */
  get suspectBecause(): Error | null {
    return this.suspicion;
  }

  /** Marks the shard suspect, fails whatever it still has outstanding, and starts probing its health. */
  markSuspect(reason: SuspicionReason, error: Error): void {
    this.connection.failPending(error);
    // A connection the router closed (the shard left the registry) is not the shard's fault: nothing to judge.
    if (this.suspectSince !== null || this.connection.closed) return;
    this.suspectSince = performance.now();
    this.suspicion = error;
    this.onChange({ shard: this.connection.address, suspect: true, reason, error, suspectMs: 0 });
    void this.probeUntilHealthy();
  }

  private async probeUntilHealthy(): Promise<void> {
    while (this.suspectSince !== null && !this.connection.closed) {
      await new Promise((r) => setTimeout(r, this.probe.intervalMs));
      if (this.connection.closed) break;
      if (await this.connection.checkHealth(this.probe.timeoutMs)) {
        const since = this.suspectSince;
        this.suspectSince = null;
        this.suspicion = null;
        this.onChange({ shard: this.connection.address, suspect: false, reason: null, error: null, suspectMs: performance.now() - since });
      }
    }
    // Closed while suspect: the shard left the router's view; no longer judged.
    if (this.suspectSince !== null) this.onChange({ shard: this.connection.address, suspect: false, reason: null, error: null, suspectMs: performance.now() - this.suspectSince, gone: true });
  }
}
