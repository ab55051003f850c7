import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { kernelThreadId as threadId } from '@expertmesh/process-lifecycle';

function threadsOfProcess(): Set<number> {
  try {
    return new Set(readdirSync('/proc/self/task').map(Number));
  } catch {
    return new Set();
  }
}

/** Sets a thread's nice value; false when the kernel refuses (raising priority needs CAP_SYS_NICE or RLIMIT_NICE). */
function trySet(tid: number, nice: number): boolean {
  try {
    setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `work` with the calling thread `levels` nice levels lower, so that it yields the CPU to the
 * threads that serve, then puts the thread back, and with it the threads started meanwhile at the
 * lowered level (onnxruntime's intra-op threads inherit the nice value of the thread that creates a
 * session, and they run that session's calls later). Lowers nothing when the priority could not be
 * raised back afterwards (checked first with one level): the thread goes on to serve.
 */
export async function lowerPriorityWhile<T>(levels: number, work: () => Promise<T>): Promise<T> {
  const tid = levels > 0 ? threadId() : null;
  if (tid === null) return work();
  const base = getPriority(tid);
  const lowered = Math.min(19, base + levels);
  if (lowered === base || !trySet(tid, base + 1)) return work();
  if (!trySet(tid, base)) return work(); // stuck one level down: never lower further a thread that cannot come back
  const before = threadsOfProcess();
  trySet(tid, lowered);
  try {
    return await work();
  } finally {
    trySet(tid, base);
    for (const t of threadsOfProcess()) {
      if (before.has(t)) continue;
      try {
        if (getPriority(t) === lowered) trySet(t, base);
      } catch {
        // The thread ended meanwhile.
      }
    }
  }
}

/** The nice value an expert worker's entry (expert-worker-boot.mjs) lowered its thread from, if it did. */
const BASE_NICE = Symbol.for('expertmesh.expertWorker.baseNice');

/** Puts the calling thread back to the priority its worker entry lowered it from (nothing if it did not). */
export function restoreStartPriority(): void {
  const base = (globalThis as Record<symbol, unknown>)[BASE_NICE];
  const tid = threadId();
  if (typeof base === 'number' && tid !== null) trySet(tid, base);
}
