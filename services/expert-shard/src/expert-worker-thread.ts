import { parentPort, workerData } from 'node:worker_threads';
import { loadModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts, restAfterBuild, type ExpertWeightSource } from '@expertmesh/local-experts';
import { WeightReader } from '@expertmesh/model-weights';
import { releaseLoadBuffers, weightFormat } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import type { FromWorker, ToWorker, WorkerLoad } from './expert-worker-protocol.js';
import { lowerPriorityWhile } from './thread-priority.js';

/**
 * One expert worker of a shard: loads one set of experts on its own thread (onnxruntime-node builds
 * a session on the calling thread, so a build here never blocks the thread that answers the router),
 * then runs them for the serving thread, one call at a time, until it is closed.
 */
const port = parentPort!;
const load = workerData as WorkerLoad;
const send = (msg: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);

/** Waits at the test gate, if any, the first time only (see WorkerLoad.gate). */
function passGate(): void {
  if (!load.gate) return;
  const gate = new Int32Array(load.gate);
  if (Atomics.compareExchange(gate, 0, 0, 1) !== 0) return;
  Atomics.notify(gate, 0);
  while (Atomics.load(gate, 0) !== 2) Atomics.wait(gate, 0, 1);
}

/** The format the experts are held in, from the first one read (a set reshaped from an empty one reports "none"). */
let format = '';

async function loadSet(): Promise<LocalRoutedExperts> {
  const config = await loadModelConfig(load.modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(load.modelDir);
  try {
    const reader = new WeightReader(checkpoint, config, load.weightDtype);
    const gated: ExpertWeightSource = {
      dtype: reader.dtype,
      routedExpert: async (layer, expert) => {
        passGate();
        const w = await reader.routedExpert(layer, expert);
        format ||= weightFormat(w.gate);
        return w;
      },
    };
    const wanted = new Map(load.layers.map((l) => [l.layer, l.experts]));
    // An empty set reshaped into the wanted one: the load rests between graphs as a serving shard's does.
    const empty = await LocalRoutedExperts.load(config, gated, load.execution, () => []);
    const set = await empty.reshaped(gated, load.execution, (layer) => wanted.get(layer) ?? [], restAfterBuild(load.restFactor));
    // The weights' JavaScript copies are garbage now: collected on this thread, not the serving one.
    await releaseLoadBuffers();
    return set;
  } finally {
    await checkpoint.close();
  }
}

let set: LocalRoutedExperts | null = null;
lowerPriorityWhile(load.loadNice, loadSet).then(
  (loaded) => {
    set = loaded;
    send({ op: 'loaded', layers: loaded.heldLayers().map((l) => ({ layer: l.layer, experts: [...l.experts] })), weightBytes: loaded.weightBytes, weightFormat: format || loaded.weightFormat });
  },
  (e: Error) => send({ op: 'load-failed', message: e.message }),
);

port.on('message', (msg: ToWorker) => {
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
