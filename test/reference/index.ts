export { loadReferenceModel, referenceLogits, referenceGreedy, referenceRoute } from './deepseek-v3-f64.js';
export type { ReferenceModel } from './deepseek-v3-f64.js';
export { readAllTensors, weightF64, decodeValue } from './safetensors-f64.js';
