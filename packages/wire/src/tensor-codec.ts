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

interface CheckedTensor {
  readonly rows: number;
  readonly data: Buffer;
  /** FP8 only: one float32 scale per row. */
  readonly scales: Float32Array | null;
  readonly dtype: WireDtype;
}

/** Checks dtype, shape and byte lengths against what is expected. */
function checkTensor(t: Tensor__Output | null, what: string, expectedCols: number): CheckedTensor {
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
    case 'TENSOR_DTYPE_FLOAT32':
      expectBytes(n * 4);
      return { rows, data, scales: null, dtype: 'float32' };
    case 'TENSOR_DTYPE_BFLOAT16':
      expectBytes(n * 2);
      return { rows, data, scales: null, dtype: 'bfloat16' };
    case 'TENSOR_DTYPE_FP8_E4M3':
      expectBytes(n);
      if (t.rowScales.length !== rows * 4) throw new WireFormatError(`${what} has ${t.rowScales.length} row-scale bytes; FP8 needs one float32 per row (${rows * 4})`);
      return { rows, data, scales: new Float32Array(new Uint8Array(t.rowScales).buffer), dtype: 'fp8' };
    default:
      throw new WireFormatError(`${what} has dtype ${String(t.dtype)}; this shard reads TENSOR_DTYPE_FLOAT32, TENSOR_DTYPE_BFLOAT16 or TENSOR_DTYPE_FP8_E4M3`);
  }
}

/** A typed view of `data` (copied only when its offset is not aligned to the element size). */
function view<T extends Float32Array | Uint16Array>(Type: { new (buffer: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number }, data: Buffer, length: number): T {
  return data.byteOffset % Type.BYTES_PER_ELEMENT === 0 ? new Type(data.buffer as ArrayBuffer, data.byteOffset, length) : new Type(new Uint8Array(data).buffer, 0, length);
}

/** Decodes a 2-D tensor to float32, checking dtype, shape and byte lengths against what is expected. */
export function decodeTensor(t: Tensor__Output | null, what: string, expectedCols: number): { values: Float32Array; rows: number } {
  const c = checkTensor(t, what, expectedCols);
  const n = c.rows * expectedCols;
  switch (c.dtype) {
    case 'float32':
      return { values: view(Float32Array, c.data, n), rows: c.rows };
    case 'bfloat16':
      return { values: bf16ToFloat32(view(Uint16Array, c.data, n)), rows: c.rows };
    case 'fp8': {
      const values = new Float32Array(n);
      for (let r = 0; r < c.rows; r++) {
        const s = c.scales![r]!;
        for (let col = 0; col < expectedCols; col++) values[r * expectedCols + col] = FP8_E4M3_TABLE[c.data[r * expectedCols + col]!]! * s;
      }
      return { values, rows: c.rows };
    }
  }
}

/** One row of bfloat16 widened to float32 (shared: decoding is synchronous). */
let widened = new Float32Array(0);

/**
 * Adds each row r of a [rows, cols] tensor into out[dstRows[r]]: the combine step, decoding as it
 * goes (no intermediate float32 copy of the whole tensor). Checks the tensor as decodeTensor does,
 * and that it has exactly dstRows.length rows.
 */
export function addTensorRows(t: Tensor__Output | null, what: string, cols: number, out: Float32Array, dstRows: Int32Array): void {
  const c = checkTensor(t, what, cols);
  if (c.rows !== dstRows.length) throw new WireFormatError(`${what} has ${c.rows} rows; ${dstRows.length} were sent`);
  const n = c.rows * cols;
  switch (c.dtype) {
    case 'float32': {
      const v = view(Float32Array, c.data, n);
      for (let r = 0; r < c.rows; r++) {
        const dst = dstRows[r]! * cols;
        const src = r * cols;
        for (let i = 0; i < cols; i++) out[dst + i]! += v[src + i]!;
      }
      return;
    }
    case 'bfloat16': {
      const bits = view(Uint16Array, c.data, n);
      if (widened.length < cols) widened = new Float32Array(cols);
      const wideBits = new Uint32Array(widened.buffer, 0, cols);
      for (let r = 0; r < c.rows; r++) {
        const dst = dstRows[r]! * cols;
        const src = r * cols;
        for (let i = 0; i < cols; i++) wideBits[i] = bits[src + i]! << 16;
        for (let i = 0; i < cols; i++) out[dst + i]! += widened[i]!;
      }
      return;
    }
    case 'fp8':
      for (let r = 0; r < c.rows; r++) {
        const dst = dstRows[r]! * cols;
        const src = r * cols;
        const s = c.scales![r]!;
        for (let i = 0; i < cols; i++) out[dst + i]! += FP8_E4M3_TABLE[c.data[src + i]!]! * s;
      }
  }
}

/** Rows `rows` of a [*, cols] float32 matrix, gathered into a new [rows.length, cols] one. */
export function gatherRows(values: Float32Array, rows: Int32Array, cols: number): Float32Array {
  const out = new Float32Array(rows.length * cols);
  for (let r = 0; r < rows.length; r++) out.set(values.subarray(rows[r]! * cols, (rows[r]! + 1) * cols), r * cols);
  return out;
}
