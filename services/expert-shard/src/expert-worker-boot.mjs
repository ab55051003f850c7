// The entry of an expert worker thread. Plain JavaScript, so that its first statement can lower the
// thread's priority before anything is compiled: a spare worker starts while the shard serves, and
// its start-up (Node's bootstrap aside) must only take CPU the serving threads leave.
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';

/** The nice value the thread had before this lowered it (expert-worker-thread.ts restores it once its modules are in). */
export const BASE_NICE = Symbol.for('expertmesh.expertWorker.baseNice');

try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
  const base = getPriority(tid);
  // Lowered only if it can come back (one level down and up again first): this thread goes on to serve.
  setPriority(tid, base + 1);
  setPriority(tid, base);
  setPriority(tid, Math.min(19, base + workerData.warmNice));
  globalThis[BASE_NICE] = base;
} catch {
  // Not Linux, or not allowed to raise the priority again: the worker starts at the shard's priority.
}

if (workerData.tsEntry) {
  // From TypeScript sources: in a worker, Node 20 does not apply `--import tsx` to the entry, so tsx is registered here.
  const { register } = await import('tsx/esm/api');
  register();
  await import(workerData.tsEntry);
} else {
  // The compiled build (`npm run build`) puts the thread's module beside this file.
  await import('./expert-worker-thread.mjs');
}
