import { parentPort } from 'node:worker_threads';
import type { LocalRoutedExperts } from '@expertmesh/local-experts';
import type { FromWorker, ToWorker, WorkerLoad } from './expert-worker-protocol.js';
import { lowerPriorityWhile, restoreStartPriority } from './thread-priority.js';

/**
 * One expert worker of a shard: loads one set of experts on its own thread (onnxruntime-node builds
 * a session on the calling thread, so a build here never blocks the thread that answers the router),
 * then runs them for the serving thread, one call at a time, until it is closed.
 */
const port = parentPort!;
const send = (msg: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);

// Started ahead of need (a spare), at low priority: the load's modules (onnxruntime, the weight readers)
// are compiled while nothing waits for them, so a plan change starts building at once.
// The entry (expert-worker-boot.mjs) lowered the thread first; it comes back once they are in.
const modules = import('./expert-worker-load.js').finally(() => restoreStartPriority());
let set: LocalRoutedExperts | null = null;

function load(what: WorkerLoad): void {
  lowerPriorityWhile(what.loadNice, async () => (await modules).loadSet(what)).then(
    (loaded) => {
      set = loaded.set;
      send({ op: 'loaded', layers: loaded.set.heldLayers().map((l) => ({ layer: l.layer, experts: [...l.experts] })), weightBytes: loaded.set.weightBytes, weightFormat: loaded.format });
    },
    (e: Error) => send({ op: 'load-failed', message: e.message }),
  );
}

port.on('message', (msg: ToWorker) => {
  if (msg.op === 'load') return load(msg.load);
  if (msg.op === 'close') {
    void (set?.close() ?? Promise.resolve()).finally(() => {
      send({ op: 'closed' });
      port.close();
    });
    return;
  }
  const { id } = msg;
  if (!set) return send({ op: 'run-failed', id, name: 'ExpertWorkerError', message: 'the worker has not loaded its experts yet' });
  set.computePairs(msg.layer, msg.hidden, msg.rows, { tokenRows: msg.tokenRows, expertIds: msg.expertIds, weights: msg.weights }).then(
    (out) => send({ op: 'ran', id, out }, [out.buffer as ArrayBuffer]),
    (e: Error) => send({ op: 'run-failed', id, name: e.name, message: e.message }),
  );
});
