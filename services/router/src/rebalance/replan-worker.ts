// Runs in a worker thread: the closed loop's re-plan (pure, input → plan), so the router's serving
// thread never holds a decode step for it.
import { parentPort, workerData } from 'node:worker_threads';
import { timedSync } from '@expertmesh/discovery';
import { lowerCallingThread } from '@expertmesh/process-lifecycle';
import { decideLoadReplan, type LoadReplanInput } from './load-replan.js';

// This thread alone, lowered before it plans anything: the router's threads that serve (its event loop and
// onnxruntime's) share a core with it, and a plan may wait for the core while they compute a step.
const { nice } = workerData as { readonly nice: number };
const lowered = lowerCallingThread(nice);

parentPort!.on('message', (job: { readonly id: number; readonly input: LoadReplanInput }) => {
  try {
    parentPort!.postMessage({ id: job.id, output: timedSync('replan-decide', () => decideLoadReplan(job.input)) });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    parentPort!.postMessage({ id: job.id, error: { name: err.name, message: err.message } });
  }
});
parentPort!.postMessage({ ready: true, tid: lowered?.tid ?? null, nice: lowered?.nice ?? null });
