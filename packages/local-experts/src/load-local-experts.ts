import type { ModelConfig } from '@expertmesh/model-config';
import { WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { LocalRoutedExperts } from './local-routed-experts.js';

/** Every routed expert of the checkpoint in `modelDir`, run in this process. */
export async function loadLocalExperts(modelDir: string, config: ModelConfig, execution: ExecutionOptions, weightDtype: WeightDtype = 'auto'): Promise<LocalRoutedExperts> {
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    return await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, weightDtype), execution);
  } finally {
    await checkpoint.close();
  }
}
