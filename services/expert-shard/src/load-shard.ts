import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts, restAfterBuild } from '@expertmesh/local-experts';
import { modelFingerprint, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint, type CheckpointLayouts } from '@expertmesh/weights';
import { selectedExperts, type ExpertSelection } from './expert-spec.js';
import type { HeldExperts } from './held-experts.js';
import { ShardCompute } from './shard-compute.js';
import { WorkerExperts } from './worker-experts.js';

/** How a shard loads its experts: where they run and the format they are held in. */
export interface ShardLoadOptions {
  readonly execution: ExecutionOptions;
  readonly weightDtype: WeightDtype;
  /**
   * Each set of experts in a worker thread of its own (`--expert-worker on`; off by default): a
   * new plan's graphs are built off the thread that answers the router. Off: on the serving thread.
   */
  readonly inWorkers?: boolean;
  /** Nice levels a worker's thread is lowered by while it loads (so that it yields to serving); 0 by default. */
  readonly loadNice?: number;
  /**
   * The checkpoint's parsed index and headers, kept from the shard's start for every later load (a
   * plan switch would otherwise parse them again on the serving thread: 13–15 ms for the demo model).
   */
  readonly checkpointLayouts?: CheckpointLayouts;
}

/** A worker's load lowers its thread to this nice level above the shard's (19 is the lowest priority). */
export const DEFAULT_LOAD_NICE = 19;

function layersOf(config: ModelConfig, selection: ExpertSelection): { layer: number; experts: number[] }[] {
  return config.moeLayers.map((layer) => ({ layer, experts: selectedExperts(selection, layer, config.nRoutedExperts) })).filter((l) => l.experts.length > 0);
}

function startWorker(modelDir: string, config: ModelConfig, selection: ExpertSelection, load: ShardLoadOptions, restFactor: number): Promise<WorkerExperts> {
  return WorkerExperts.start({ modelDir, execution: load.execution, weightDtype: load.weightDtype, layers: layersOf(config, selection), restFactor, loadNice: load.loadNice ?? 0 });
}

/** Loads only the selected experts from the checkpoint: a shard's memory grows with what it holds. */
export async function loadShardCompute(
  modelDir: string,
  selection: ExpertSelection | ((fingerprint: string) => Promise<ExpertSelection>),
  load: ShardLoadOptions,
  maxTokensPerCall?: number,
): Promise<ShardCompute> {
  const config = await loadModelConfig(modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(modelDir, load.checkpointLayouts);
  try {
    const fingerprint = await modelFingerprint(config, checkpoint);
    const chosen = typeof selection === 'function' ? await selection(fingerprint) : selection;
    const experts = load.inWorkers
      ? await startWorker(modelDir, config, chosen, load, 0)
      : await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, load.weightDtype), load.execution, (layer) => selectedExperts(chosen, layer, config.nRoutedExperts));
    return new ShardCompute(config, fingerprint, experts, maxTokensPerCall, load.inWorkers ? DEFAULT_LOAD_NICE : null);
  } finally {
    await checkpoint.close();
  }
}

/**
 * The set of experts a running shard switches to (after a placement change). In a worker (see
 * ShardLoadOptions.inWorkers) the whole set is built in a new worker while the current one serves.
 * On the serving thread, the experts it already holds are kept as they are (their graphs shared
 * with the set serving now), only those it gains are read from the checkpoint and compiled, and the
 * load yields one turn of the event loop after each graph. Either way it rests `restFactor` times
 * as long as each graph took to build (restAfterBuild; 0: no rest); on the serving thread each graph
 * is then built at the end of a step (compute.stepEnds), when the router is not waiting for this shard.
 * A shard that has answered no call yet (joining) has no step to build in: it rests
 * `joiningRestFactor` times each build instead (see MembershipTimings.joinLoadRestFactor), until its
 * first answered call. Each graph built runs once on zero rows before the set is returned (warmUpBuilt).
 */
export async function loadExperts(modelDir: string, compute: ShardCompute, selection: ExpertSelection, load: ShardLoadOptions, restFactor = 0, joiningRestFactor = restFactor): Promise<HeldExperts> {
  const config = compute.config;
  if (load.inWorkers) return startWorker(modelDir, config, selection, load, restFactor);
  // inWorkers is fixed for a shard's life: without it every set it holds was built on this thread.
  const current = compute.experts as LocalRoutedExperts;
  // Each graph is built in the quiet part of a step (StepEnds): the first one too, not the instant the turn came.
  await compute.stepEnds.next();
  const servingRest = restAfterBuild(restFactor);
  const joiningRest = restAfterBuild(joiningRestFactor);
  const afterGraph = async (buildMs: number): Promise<void> => {
    await (compute.stepEnds.answeredAny ? servingRest : joiningRest)(buildMs);
    await compute.stepEnds.next();
  };
  const checkpoint = await SafetensorsCheckpoint.open(modelDir, load.checkpointLayouts);
  let next: LocalRoutedExperts;
  try {
    next = await current.reshaped(new WeightReader(checkpoint, config, load.weightDtype), load.execution, (layer) => selectedExperts(selection, layer, config.nRoutedExperts), afterGraph);
  } finally {
    await checkpoint.close();
  }
  // Each new graph's first run (cold: see warmUpBuilt) on zero rows, in a step's quiet part, before anyone routes to it.
  await compute.stepEnds.next();
  await next.warmUpBuilt();
  return next;
}
