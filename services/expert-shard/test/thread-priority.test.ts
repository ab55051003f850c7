import { readlinkSync } from 'node:fs';
import { getPriority } from 'node:os';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { lowerPriorityWhile } from '../src/thread-priority.js';

const ownTid = (): number => Number(readlinkSync('/proc/thread-self').split('/').at(-1));

/** A thread started now (it inherits the caller's nice value, as onnxruntime's intra-op threads do); its kernel id. */
async function startThread(): Promise<{ tid: number; worker: Worker }> {
  const worker = new Worker(`const { parentPort } = require('node:worker_threads'); parentPort.postMessage(Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').at(-1))); setInterval(() => {}, 1000);`, { eval: true });
  const tid = await new Promise<number>((resolve) => worker.once('message', resolve));
  return { tid, worker };
}

/** An expert worker's load runs niced (it yields the CPU to serving threads) and the thread comes back to serve at its own priority. */
describe('lowerPriorityWhile', () => {
  it('lowers the calling thread while the work runs, then restores it and the threads started meanwhile', async () => {
    const tid = ownTid();
    const base = getPriority(tid);
    // Only a thread that may raise its priority again is lowered (root, CAP_SYS_NICE or RLIMIT_NICE): otherwise nothing changes.
    const canRestore = process.getuid?.() === 0;
    let during = NaN;
    let started: { tid: number; worker: Worker } | null = null;
    const result = await lowerPriorityWhile(10, async () => {
      during = getPriority(tid);
      started = await startThread();
      return 'done';
    });
    try {
      expect(result).toBe('done');
      expect(during).toBe(canRestore ? Math.min(19, base + 10) : base);
      expect(getPriority(tid)).toBe(base);
      expect(getPriority(started!.tid)).toBe(base);
    } finally {
      await started!.worker.terminate();
    }
  });

  it('restores the priority when the work fails', async () => {
    const tid = ownTid();
    const base = getPriority(tid);
    await expect(lowerPriorityWhile(5, async () => Promise.reject(new Error('load failed')))).rejects.toThrow('load failed');
    expect(getPriority(tid)).toBe(base);
  });
});
