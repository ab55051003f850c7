export { WeightReader, WeightShapeError } from './model-weights.js';
export type { LayerWeights, AttentionWeights, FfnWeights, RouterWeights } from './model-weights.js';
export { modelFingerprint } from './model-fingerprint.js';
export { readCheckpointIdentity } from './checkpoint-identity.js';
export type { CheckpointIdentity } from './checkpoint-identity.js';
