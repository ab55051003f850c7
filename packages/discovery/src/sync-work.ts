import { channel } from 'node:diagnostics_channel';

/** One synchronous slice of a process's thread, as `timedSync` reports it. */
export interface SyncWork {
  readonly what: string;
  /** Epoch ms when it began. */
  readonly at: number;
  readonly ms: number;
  /** The process's CPU time in it (user + system, every thread). */
  readonly cpuMs: number;
}

/**
 * The diagnostics channel `timedSync` reports on (`node:diagnostics_channel`): a measurement preload
 * (bench/switch-trace.mjs) subscribes to see what a switch runs synchronously. Nothing subscribed, nothing is timed.
 */
export const SYNC_WORK_CHANNEL = 'expertmesh:sync-work';
const syncWork = channel(SYNC_WORK_CHANNEL);

/** `work()`, timed and reported on SYNC_WORK_CHANNEL when someone listens. */
export function timedSync<T>(what: string, work: () => T): T {
  if (!syncWork.hasSubscribers) return work();
  const started = performance.now();
  const cpu = process.cpuUsage();
  try {
    return work();
  } finally {
    const used = process.cpuUsage(cpu);
    syncWork.publish({ what, at: performance.timeOrigin + started, ms: performance.now() - started, cpuMs: (used.user + used.system) / 1000 } satisfies SyncWork);
  }
}
