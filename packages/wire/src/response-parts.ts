import type { Long } from '@grpc/proto-loader';
import type { RunExpertsResponse } from './generated/expertmesh/v1/RunExpertsResponse.js';
import type { TensorDtype } from './generated/expertmesh/v1/TensorDtype.js';

/**
 * A RunExpertsResponse as the protobuf bytes the frames carry, in two parts: `head`, every field but the
 * output's values (a few dozen bytes), and `data`, the output's values themselves, a view of the
 * tensor's own memory. Written one after the other they are one valid message: the output's values go
 * last inside the output, which goes last in the response (protobuf readers take fields in any order).
 * The serializer of the gRPC method copies the values into a new buffer per answer; this does not:
 * on a shard that was one allocation outside V8's heap per call, the size of the answer (issue 16).
 */
export interface ResponseParts {
  readonly head: Buffer;
  readonly data: Buffer;
}

const DTYPE_NUMBERS: Record<string, number> = { TENSOR_DTYPE_UNSPECIFIED: 0, TENSOR_DTYPE_FLOAT32: 1, TENSOR_DTYPE_BFLOAT16: 2, TENSOR_DTYPE_FP8_E4M3: 3 };

const LENGTH_DELIMITED = 2;
const tag = (field: number, wireType: number): number => (field << 3) | wireType;

/** Bytes of `v` (a non-negative integer below 2^53) as a protobuf varint. */
function varintBytes(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

class HeadWriter {
  at = 0;
  constructor(readonly out: Buffer) {}

  varint(v: number): void {
    while (v >= 128) {
      this.out[this.at++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.out[this.at++] = v;
  }

  bytes(b: Uint8Array): void {
    this.out.set(b, this.at);
    this.at += b.length;
  }
}

function asBytes(v: Uint8Array | string | undefined): Uint8Array {
  if (v === undefined) return new Uint8Array(0);
  if (typeof v === 'string') return Buffer.from(v, 'base64');
  return v;
}

function dtypeNumber(d: TensorDtype | undefined): number {
  if (d === undefined) return 0;
  if (typeof d === 'number') return d;
  const n = DTYPE_NUMBERS[d];
  if (n === undefined) throw new RangeError(`unknown tensor dtype ${String(d)}`);
  return n;
}

function wholeNumber(v: number | string | Long | undefined, what: string): number {
  const n = Number(v ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} ${String(v)} is not a non-negative safe integer`);
  return n;
}

/** The two parts of `r` (see ResponseParts); `head.length + data.length` is the message's length. */
export function encodeResponseParts(r: RunExpertsResponse): ResponseParts {
  const t = r.output ?? null;
  const values = asBytes(t?.data);
  const data = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const rowScales = asBytes(t?.rowScales);
  const shape = (t?.shape ?? []).map((s) => wholeNumber(s, 'shape'));
  const dtype = dtypeNumber(t?.dtype);
  const scalars: [number, number][] = [
    [1, wholeNumber(r.requestId, 'request id')],
    [3, wholeNumber(r.computeMicros, 'compute micros')],
    [4, wholeNumber(r.queueMicros, 'queue micros')],
  ];
  const shapeBytes = shape.reduce((a, s) => a + varintBytes(s), 0);
  // Inside the output: dtype, shape (packed), row scales, then the data field's tag and length (its bytes follow in `data`).
  const tensorHead =
    (dtype ? 1 + varintBytes(dtype) : 0) +
    (shape.length ? 1 + varintBytes(shapeBytes) + shapeBytes : 0) +
    (rowScales.length ? 1 + varintBytes(rowScales.length) + rowScales.length : 0) +
    (data.length ? 1 + varintBytes(data.length) : 0);
  const tensorBytes = tensorHead + data.length;
  let headBytes = 0;
  for (const [, v] of scalars) if (v) headBytes += 1 + varintBytes(v);
  if (t) headBytes += 1 + varintBytes(tensorBytes) + tensorHead;
  const w = new HeadWriter(Buffer.allocUnsafe(headBytes));
  for (const [field, v] of scalars) {
    if (!v) continue;
    w.varint(tag(field, 0));
    w.varint(v);
  }
  if (t) {
    w.varint(tag(2, LENGTH_DELIMITED));
    w.varint(tensorBytes);
    if (dtype) {
      w.varint(tag(1, 0));
      w.varint(dtype);
    }
    if (shape.length) {
      w.varint(tag(2, LENGTH_DELIMITED));
      w.varint(shapeBytes);
      for (const s of shape) w.varint(s);
    }
    if (rowScales.length) {
      w.varint(tag(4, LENGTH_DELIMITED));
      w.varint(rowScales.length);
      w.bytes(rowScales);
    }
    if (data.length) {
      w.varint(tag(3, LENGTH_DELIMITED));
      w.varint(data.length);
    }
  }
  return { head: w.out, data };
}
