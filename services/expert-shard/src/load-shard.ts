import { loadModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { modelFingerprint, WeightReader } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { selectedExperts, type ExpertSelection } from './expert-spec.js';
import { ShardCompute } from './shard-compute.js';

/** Loads only the selected experts from the checkpoint: a shard's memory grows with what it holds. */
export async function loadShardCompute(
  modelDir: string,
  selection: ExpertSelection | ((fingerprint: string) => Promise<ExpertSelection>),
  execution: ExecutionOptions,
  maxTokensPerCall?: number,
): Promise<ShardCompute> {
  const config = await loadModelConfig(modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    const fingerprint = await modelFingerprint(config, checkpoint);
    const chosen = typeof selection === 'function' ? await selection(fingerprint) : selection;
    const experts = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config), execution, (layer) => selectedExperts(chosen, layer, config.nRoutedExperts));
    return new ShardCompute(config, fingerprint, experts, maxTokensPerCall);
  } finally {
    await checkpoint.close();
  }
}

/** Loads another set of experts for a running shard (after a placement change). */
export async function loadExperts(modelDir: string, compute: ShardCompute, selection: ExpertSelection, execution: ExecutionOptions): Promise<LocalRoutedExperts> {
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    const config = compute.config;
    return await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config), execution, (layer) => selectedExperts(selection, layer, config.nRoutedExperts));
  } finally {
    await checkpoint.close();
  }
}
