import { loadModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts, yieldTurn, type AfterGraphBuilt } from '@expertmesh/local-experts';
import { modelFingerprint, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { selectedExperts, type ExpertSelection } from './expert-spec.js';
import { ShardCompute } from './shard-compute.js';

/** Loads only the selected experts from the checkpoint: a shard's memory grows with what it holds. */
/** How a shard loads its experts: where they run and the format they are held in. */
export interface ShardLoadOptions {
  readonly execution: ExecutionOptions;
  readonly weightDtype: WeightDtype;
}

export async function loadShardCompute(
  modelDir: string,
  selection: ExpertSelection | ((fingerprint: string) => Promise<ExpertSelection>),
  load: ShardLoadOptions,
  maxTokensPerCall?: number,
): Promise<ShardCompute> {
  const config = await loadModelConfig(modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    const fingerprint = await modelFingerprint(config, checkpoint);
    const chosen = typeof selection === 'function' ? await selection(fingerprint) : selection;
    const experts = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, load.weightDtype), load.execution, (layer) => selectedExperts(chosen, layer, config.nRoutedExperts));
    return new ShardCompute(config, fingerprint, experts, maxTokensPerCall);
  } finally {
    await checkpoint.close();
  }
}

/**
 * The set of experts a running shard switches to (after a placement change): the experts it already
 * holds are kept as they are (their graphs shared with the set serving now), only those it gains are
 * read from the checkpoint and compiled; `afterGraph` runs after each graph built (see restAfterBuild).
 */
export async function loadExperts(modelDir: string, compute: ShardCompute, selection: ExpertSelection, load: ShardLoadOptions, afterGraph: AfterGraphBuilt = yieldTurn): Promise<LocalRoutedExperts> {
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    const config = compute.config;
    return await compute.experts.reshaped(new WeightReader(checkpoint, config, load.weightDtype), load.execution, (layer) => selectedExperts(selection, layer, config.nRoutedExperts), afterGraph);
  } finally {
    await checkpoint.close();
  }
}
