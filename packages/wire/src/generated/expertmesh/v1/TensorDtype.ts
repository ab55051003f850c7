// Original file: ../../proto/expertmesh/v1/tensor.proto

/**
 * Element type of a tensor on the wire. Values are raw little-endian bytes.
 */
export const TensorDtype = {
  TENSOR_DTYPE_UNSPECIFIED: 'TENSOR_DTYPE_UNSPECIFIED',
  TENSOR_DTYPE_FLOAT32: 'TENSOR_DTYPE_FLOAT32',
  TENSOR_DTYPE_BFLOAT16: 'TENSOR_DTYPE_BFLOAT16',
  /**
   * float8_e4m3fn with one float32 scale per row (per token): value = code × row_scales[row].
   */
  TENSOR_DTYPE_FP8_E4M3: 'TENSOR_DTYPE_FP8_E4M3',
} as const;

/**
 * Element type of a tensor on the wire. Values are raw little-endian bytes.
 */
export type TensorDtype =
  | 'TENSOR_DTYPE_UNSPECIFIED'
  | 0
  | 'TENSOR_DTYPE_FLOAT32'
  | 1
  | 'TENSOR_DTYPE_BFLOAT16'
  | 2
  /**
   * float8_e4m3fn with one float32 scale per row (per token): value = code × row_scales[row].
   */
  | 'TENSOR_DTYPE_FP8_E4M3'
  | 3

/**
 * Element type of a tensor on the wire. Values are raw little-endian bytes.
 */
export type TensorDtype__Output = typeof TensorDtype[keyof typeof TensorDtype]
