export {
  DTYPE_BYTES,
  FP8_E4M3_MAX,
  FP8_E4M3_TABLE,
  bf16ToFloat32,
  bytesToFloat32,
  f16ToFloat32,
  float32ToBf16,
  float32ToBf16Bytes,
  float32ToF16Bytes,
  float32ToFp8E4m3,
  float32ToFp8E4m3Array,
  float32ToFp8E4m3Bytes,
  fp8E4m3ToFloat32,
  halfToNumber,
  isFloatDtype,
  isSafetensorsDtype,
  numberToHalf,
} from './dtypes.js';
export type { FloatDtype, SafetensorsDtype } from './dtypes.js';
export { CheckpointError } from './errors.js';
export { INDEX_FILE, SINGLE_FILE } from './checkpoint-files.js';
export { readSafetensorsHeader } from './safetensors-header.js';
export type { TensorInfo } from './safetensors-header.js';
export { SafetensorsCheckpoint } from './safetensors-reader.js';
export { CheckpointLayouts, readCheckpointLayout } from './checkpoint-layout.js';
export type { CheckpointLayout, HeaderReader } from './checkpoint-layout.js';
export type { SafetensorsHeader } from './safetensors-header.js';
export { dequantizeBlockFp8, dequantizeBlockFp8ByChunks, quantizeBlockFp8, readFp8Blocks, readLinearWeight, scaleInvName, fp8BlockLayout } from './fp8-block.js';
export { byChunks, CHUNK_VALUES, loopTurn } from './loop-turns.js';
export type { Fp8BlockLayout, Fp8Blocks } from './fp8-block.js';
export { writeSafetensors, writeShardedCheckpoint, shardFileName } from './safetensors-writer.js';
export type { LazyTensor, TensorBytes, TensorSource } from './safetensors-writer.js';
export { requireModelDir, checkpointState } from './model-folder.js';
export type { CheckpointState } from './model-folder.js';
