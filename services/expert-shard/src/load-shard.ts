import { loadModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts, modelFingerprint, WeightReader } from '@expertmesh/model';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { selectedExperts, type ExpertSelection } from './expert-spec.js';
import { ShardCompute } from './shard-compute.js';

/** Loads only the selected experts from the checkpoint: a shard's memory grows with what it holds. */
export async function loadShardCompute(modelDir: string, selection: ExpertSelection, execution: ExecutionOptions): Promise<ShardCompute> {
  const config = await loadModelConfig(modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    const fingerprint = await modelFingerprint(config, checkpoint);
    const experts = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config), execution, (layer) => selectedExperts(selection, layer, config.nRoutedExperts));
    return new ShardCompute(config, fingerprint, experts);
  } finally {
    await checkpoint.close();
  }
}
