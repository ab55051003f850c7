import { setPriority } from 'node:os';
import { procAutogroup, type AutogroupAccess } from './joining-autogroup.js';

/**
 * A leaving shard's CPU share once its hand-over is done. From then on no router sends it calls, yet its teardown
 * (revoking its lease, closing its channels, onnxruntime sessions and V8 heap, unmapping its weights, exiting) is a
 * burst of CPU on the core it shares with the shards that serve: ~35 ms at once in bench:rebalance's traced leave
 * (round 12), when the longest token gap of the switch fell. Lowered to the weakest weight the kernel gives, it
 * runs in the gaps the serving shards leave. Never raised back: the process is on its way out.
 */
export const LEAVING_NICE = 19;

export interface LoweredForExit {
  /** Whether this process's autogroup was lowered (Linux with autogroups, a shard leading its own session). */
  readonly autogroup: boolean;
  /** Whether the calling thread (the one that tears down and exits) was lowered. */
  readonly thread: boolean;
}

/** Lowers this process's autogroup (when it is the process's own) and the calling thread to `nice`; never throws. */
export function lowerForExit(access: AutogroupAccess = procAutogroup, setThreadNice: (nice: number) => void = (nice) => setPriority(nice), nice: number = LEAVING_NICE): LoweredForExit {
  let autogroup = false;
  const s = access.session();
  // An autogroup shared with other processes (not the leader of its session) is theirs too: left alone.
  if (s && s.sid === s.pid) {
    const from = access.readNice();
    if (from !== null && from < nice) {
      try {
        access.writeNice(nice);
        autogroup = true;
      } catch {
        // Refused or rate-limited (~10 writes a second): the teardown runs at the group's weight, as before.
      }
    }
  }
  let thread = false;
  try {
    setThreadNice(nice);
    thread = true;
  } catch {
    // Lowering is always allowed on Linux; elsewhere it may not be: nothing lost.
  }
  return { autogroup, thread };
}
