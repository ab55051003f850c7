/**
 * The float64 DeepSeek-V3 reference the correctness tests check the engine against.
 * Independent of the project's packages: it reads the checkpoint itself.
 */
export {
  loadReferenceModel,
  referenceLogits,
  referenceGreedy,
  referenceAttention,
  referenceFfn,
  referenceRoute,
  isMoeLayer,
  parseConfig,
  ropeParameters,
  applyRope,
  yarnGetMscale,
} from './deepseek-v3-f64.js';
export type { ReferenceModel, ReferenceConfig, RopeParameters, YarnScaling } from './deepseek-v3-f64.js';
export {
  checkpointFiles,
  readSafetensorsFile,
  readAllTensors,
  readCheckpointF64,
  weightF64,
  decodeValue,
  decodeF8E4M3,
  decodeBF16,
  decodeF16,
} from './safetensors-f64.js';
export type { F64Tensor, StoredTensor } from './safetensors-f64.js';
