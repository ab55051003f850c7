// Runs in a worker thread: the closed loop's re-plan (pure, input → plan), so the router's serving
// thread never holds a decode step for it.
import { parentPort } from 'node:worker_threads';
import { decideLoadReplan, type LoadReplanInput } from './load-replan.js';

parentPort!.on('message', (job: { readonly id: number; readonly input: LoadReplanInput }) => {
  try {
    parentPort!.postMessage({ id: job.id, output: decideLoadReplan(job.input) });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    parentPort!.postMessage({ id: job.id, error: { name: err.name, message: err.message } });
  }
});
parentPort!.postMessage({ ready: true });
