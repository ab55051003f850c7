export { WeightReader, WeightShapeError, WEIGHT_DTYPES, QUANTIZED_FORMATS } from './model-weights.js';
export { readQuantized } from './quantize-at-load.js';
export type { LayerWeights, AttentionWeights, FfnWeights, RouterWeights, WeightDtype } from './model-weights.js';
export { modelFingerprint } from './model-fingerprint.js';
export { readCheckpointIdentity } from './checkpoint-identity.js';
export type { CheckpointIdentity } from './checkpoint-identity.js';
export { layoutFromConfig, layoutFromCheckpoint, matrixBytes, predictRouterMemory, predictExpertBytes, kvCacheBytes } from './weight-memory.js';
export type { StorageLayout, StoredMatrixDtype, RouterMemory } from './weight-memory.js';
export { EMBED_TOKENS, FINAL_NORM, LM_HEAD, attentionNames, layerNormNames, mlpNames, denseMlpPrefix, sharedExpertsPrefix, routedExpertPrefix, routerNames } from './tensor-names.js';
