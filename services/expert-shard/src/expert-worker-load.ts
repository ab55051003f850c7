import { loadModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts, restAfterBuild, type ExpertWeightSource } from '@expertmesh/local-experts';
import { WeightReader } from '@expertmesh/model-weights';
import { weightFormat } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import type { WorkerLoad } from './expert-worker-protocol.js';

/**
 * An expert worker's load (expert-worker-thread.ts imports this module once its thread priority is
 * lowered, so that even compiling these modules yields to the threads that serve).
 */
/** Waits at the test gate, if any, the first time only (see WorkerLoad.gate). */
function passGate(load: WorkerLoad): void {
  if (!load.gate) return;
  const gate = new Int32Array(load.gate);
  if (Atomics.compareExchange(gate, 0, 0, 1) !== 0) return;
  Atomics.notify(gate, 0);
  while (Atomics.load(gate, 0) !== 2) Atomics.wait(gate, 0, 1);
}

/** Loads the set; `format` is the one the experts are held in, from the first read (a set reshaped from an empty one reports "none"). */
export async function loadSet(load: WorkerLoad): Promise<{ set: LocalRoutedExperts; format: string }> {
  let format = '';
  const config = await loadModelConfig(load.modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(load.modelDir);
  try {
    const reader = new WeightReader(checkpoint, config, load.weightDtype);
    const gated: ExpertWeightSource = {
      expertDtype: reader.expertDtype,
      routedExpert: async (layer, expert) => {
        passGate(load);
        const w = await reader.routedExpert(layer, expert);
        format ||= weightFormat(w.gate);
        return w;
      },
    };
    const wanted = new Map(load.layers.map((l) => [l.layer, l.experts]));
    // An empty set reshaped into the wanted one: the load rests between graphs as a serving shard's does.
    const empty = await LocalRoutedExperts.load(config, gated, load.execution, () => []);
    const set = await empty.reshaped(gated, load.execution, (layer) => wanted.get(layer) ?? [], restAfterBuild(load.restFactor));
    // A large load's buffers are collected by reshaped() (forced, past 256 MiB); a small one's by V8 in its own time.
    // A session's first run allocates and prepares what later runs reuse: at the load's priority, not on the first call.
    await set.warmUpBuilt();
    return { set, format: format || set.weightFormat };
  } finally {
    await checkpoint.close();
  }
}
