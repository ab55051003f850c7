// Original file: ../../proto/expertmesh/v1/tensor.proto

import type { TensorDtype as _expertmesh_v1_TensorDtype, TensorDtype__Output as _expertmesh_v1_TensorDtype__Output } from '../../expertmesh/v1/TensorDtype.js';

/**
 * A dense row-major tensor: hot-path data travels as bytes, never as repeated floats.
 */
export interface Tensor {
  'dtype'?: (_expertmesh_v1_TensorDtype);
  'shape'?: (number)[];
  'data'?: (Buffer | Uint8Array | string);
  /**
   * FP8 only: float32 little-endian, one per row (shape[0] values).
   */
  'rowScales'?: (Buffer | Uint8Array | string);
}

/**
 * A dense row-major tensor: hot-path data travels as bytes, never as repeated floats.
 */
export interface Tensor__Output {
  'dtype': (_expertmesh_v1_TensorDtype__Output);
  'shape': (number)[];
  'data': (Buffer);
  /**
   * FP8 only: float32 little-endian, one per row (shape[0] values).
   */
  'rowScales': (Buffer);
}
