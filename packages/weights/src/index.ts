export {
  DTYPE_BYTES,
  FP8_E4M3_MAX,
  FP8_E4M3_TABLE,
  bf16ToFloat32,
  f16ToFloat32,
  float32ToBf16,
  float32ToBf16Bytes,
  float32ToFp8E4m3,
  float32ToFp8E4m3Array,
  fp8E4m3ToFloat32,
  halfToNumber,
  isSafetensorsDtype,
  numberToHalf,
} from './dtypes.js';
export type { SafetensorsDtype } from './dtypes.js';
export { CheckpointError } from './errors.js';
export { SafetensorsCheckpoint, INDEX_FILE, SINGLE_FILE } from './safetensors-reader.js';
export type { TensorInfo } from './safetensors-reader.js';
export { dequantizeBlockFp8, quantizeBlockFp8, readLinearWeight } from './fp8-block.js';
export { writeSafetensors, writeShardedCheckpoint, shardFileName } from './safetensors-writer.js';
export type { LazyTensor } from './safetensors-writer.js';
