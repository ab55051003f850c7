import { readFileSync, readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/**
 * The calling thread's kernel id (Linux: /proc/thread-self links to "<pid>/task/<tid>"); null elsewhere.
 * On Linux a nice value belongs to one thread: setpriority(PRIO_PROCESS, tid), which os.setPriority calls,
 * sets that thread's alone.
 */
export function kernelThreadId(): number | null {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
    return Number.isInteger(tid) && tid > 0 ? tid : null;
  } catch {
    return null;
  }
}

/** A thread's nice value as the kernel schedules it (/proc/PID/task/TID/stat, field 19); null when unreadable. */
export function threadNice(tid: number, pid: number = process.pid): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // The name (field 2) is parenthesised and may hold spaces: count the fields after its closing parenthesis (field 3 on).
    const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19 - 3]);
    return Number.isInteger(nice) ? nice : null;
  } catch {
    return null;
  }
}

/**
 * Lowers the calling thread (only it) to `nice`, never raising it: for a thread whose work may wait while the
 * threads that serve run (the kernel gives nice 19 about 1/70 of a nice-0 thread's share of a busy core, and
 * the whole core when it is otherwise idle). Returns the thread's id and its nice value now; null where
 * threads have no kernel id or nice value of their own (not Linux). Never throws.
 */
export function lowerCallingThread(nice: number): { readonly tid: number; readonly nice: number } | null {
  const tid = kernelThreadId();
  if (tid === null) return null;
  try {
    if (getPriority(tid) < nice) setPriority(tid, nice);
    return { tid, nice: getPriority(tid) };
  } catch {
    return null;
  }
}
