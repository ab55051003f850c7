import { bf16ToFloat32, float32ToBf16Bytes, float32ToFp8E4m3Array, FP8_E4M3_MAX, FP8_E4M3_TABLE } from '@expertmesh/weights';
import type { Tensor } from './generated/expertmesh/v1/Tensor.js';
import type { Tensor__Output } from './generated/expertmesh/v1/Tensor.js';
import type { TensorDtype__Output } from './generated/expertmesh/v1/TensorDtype.js';

export type WireDtype = 'float32' | 'bfloat16' | 'fp8';

export const WIRE_DTYPE_ENUM: Record<WireDtype, TensorDtype__Output> = {
  float32: 'TENSOR_DTYPE_FLOAT32',
  bfloat16: 'TENSOR_DTYPE_BFLOAT16',
  fp8: 'TENSOR_DTYPE_FP8_E4M3',
};

const BYTES_PER_VALUE: Record<WireDtype, number> = { float32: 4, bfloat16: 2, fp8: 1 };

/** Bytes on the wire for a [rows, cols] tensor (FP8 adds one float32 scale per row). */
export function wireBytes(dtype: WireDtype, rows: number, cols: number): number {
  return rows * cols * BYTES_PER_VALUE[dtype] + (dtype === 'fp8' ? rows * 4 : 0);
}

/** A malformed tensor or request field: the sender's fault (INVALID_ARGUMENT). */
export class WireFormatError extends Error {
  override readonly name = 'WireFormatError';
}

export function asBuffer(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Encodes [rows, cols] float32 values; FP8 scales each row by its own amax (DeepSeek-style dispatch). */
export function encodeTensor(values: Float32Array, rows: number, cols: number, dtype: WireDtype): Tensor {
  const shape = [rows, cols];
  switch (dtype) {
    case 'float32':
      return { dtype: WIRE_DTYPE_ENUM.float32, shape, data: asBuffer(values) };
    case 'bfloat16':
      return { dtype: WIRE_DTYPE_ENUM.bfloat16, shape, data: asBuffer(float32ToBf16Bytes(values)) };
    case 'fp8': {
      const codes = new Uint8Array(rows * cols);
      const scales = new Float32Array(rows);
      for (let r = 0; r < rows; r++) {
        const row = values.subarray(r * cols, (r + 1) * cols);
        let amax = 0;
        for (let i = 0; i < row.length; i++) amax = Math.max(amax, Math.abs(row[i]!));
        const scale = amax > 0 ? amax / FP8_E4M3_MAX : 1;
        scales[r] = scale;
        float32ToFp8E4m3Array(row, scales[r]!, codes, r * cols);
      }
      return { dtype: WIRE_DTYPE_ENUM.fp8, shape, data: asBuffer(codes), rowScales: asBuffer(scales) };
    }
  }
}

/** Decodes a 2-D tensor to float32, checking dtype, shape and byte lengths against what is expected. */
export function decodeTensor(t: Tensor__Output | null, what: string, expectedCols: number): { values: Float32Array; rows: number } {
  if (!t) throw new WireFormatError(`${what} is missing`);
  if (t.shape.length !== 2 || t.shape[1] !== expectedCols) {
    throw new WireFormatError(`${what} has shape [${t.shape.join(', ')}]; expected [tokens, ${expectedCols}]`);
  }
  const rows = t.shape[0]!;
  const n = rows * expectedCols;
  const data = t.data;
  const expectBytes = (bytes: number): void => {
    if (data.length !== bytes) throw new WireFormatError(`${what} has ${data.length} data bytes; ${t.dtype} [${rows}, ${expectedCols}] needs ${bytes}`);
  };
  switch (t.dtype) {
    case 'TENSOR_DTYPE_FLOAT32': {
      expectBytes(n * 4);
      // Copy when unaligned: Float32Array views need 4-byte alignment.
      const values = data.byteOffset % 4 === 0 ? new Float32Array(data.buffer, data.byteOffset, n) : new Float32Array(new Uint8Array(data).buffer);
      return { values, rows };
    }
    case 'TENSOR_DTYPE_BFLOAT16': {
      expectBytes(n * 2);
      const bits = data.byteOffset % 2 === 0 ? new Uint16Array(data.buffer, data.byteOffset, n) : new Uint16Array(new Uint8Array(data).buffer);
      return { values: bf16ToFloat32(bits), rows };
    }
    case 'TENSOR_DTYPE_FP8_E4M3': {
      expectBytes(n);
      if (t.rowScales.length !== rows * 4) throw new WireFormatError(`${what} has ${t.rowScales.length} row-scale bytes; FP8 needs one float32 per row (${rows * 4})`);
      const scales = new Float32Array(new Uint8Array(t.rowScales).buffer);
      const values = new Float32Array(n);
      for (let r = 0; r < rows; r++) {
        const s = scales[r]!;
        for (let c = 0; c < expectedCols; c++) values[r * expectedCols + c] = FP8_E4M3_TABLE[data[r * expectedCols + c]!]! * s;
      }
      return { values, rows };
    }
    default:
      throw new WireFormatError(`${what} has dtype ${String(t.dtype)}; this shard reads TENSOR_DTYPE_FLOAT32, TENSOR_DTYPE_BFLOAT16 or TENSOR_DTYPE_FP8_E4M3`);
  }
}
