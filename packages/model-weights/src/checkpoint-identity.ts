import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { modelFingerprint } from './model-fingerprint.js';

/** Which model a checkpoint holds: its config, and the fingerprint every process serving it must share. */
export interface CheckpointIdentity {
  readonly config: ModelConfig;
  readonly fingerprint: string;
}

export async function readCheckpointIdentity(modelDir: string): Promise<CheckpointIdentity> {
  const config = await loadModelConfig(modelDir);
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  try {
    return { config, fingerprint: await modelFingerprint(config, checkpoint) };
  } finally {
    await checkpoint.close();
  }
}
