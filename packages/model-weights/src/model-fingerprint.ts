import { createHash } from 'node:crypto';
import type { ModelConfig } from '@expertmesh/model-config';
import type { SafetensorsCheckpoint } from '@expertmesh/weights';
import { EMBED_TOKENS, FINAL_NORM, LM_HEAD } from './tensor-names.js';

const SAMPLE_BYTES = 4096;

/**
 * A short id of the model a process serves, so a router never mixes experts of another model in:
 * config.json, every tensor's name, dtype and shape, and sample bytes of a few tensors (two random
 * checkpoints of one architecture differ there). Cheap enough for the real 671B checkpoint.
 */
export async function modelFingerprint(config: ModelConfig, checkpoint: SafetensorsCheckpoint): Promise<string> {
  const h = createHash('sha256');
  h.update(JSON.stringify(config.raw, Object.keys(config.raw).sort()));
  for (const name of checkpoint.names().sort()) {
    const info = checkpoint.info(name);
    h.update(`${name}:${info.dtype}:${info.shape.join('x')};`);
  }
  for (const name of [FINAL_NORM, LM_HEAD, EMBED_TOKENS]) {
    if (!checkpoint.has(name)) continue;
    // Only the sample is read: DeepSeek-R1's embedding and LM head are 1.85 GB each.
    h.update(await checkpoint.readRaw(name, SAMPLE_BYTES));
  }
  return h.digest('hex').slice(0, 16);
}
