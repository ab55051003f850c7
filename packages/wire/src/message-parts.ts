import type { ProtobufTypeDefinition } from '@grpc/proto-loader';
import { expertmeshV1 } from './proto.js';
import type { Tensor } from './generated/expertmesh/v1/Tensor.js';

/**
 * A message whose tensor field goes last, with the tensor's values last inside it, as two parts: `head`, every
 * other byte of the message (a few dozen), and `data`, the values themselves, a view of the tensor's own memory.
 * Written one after the other they are one valid message (protobuf readers take fields in any order). The
 * gRPC methods' serializers copy the values into a new buffer per message; this does not (issue 16).
 *
 * The head is written by the encoders loaded from the .proto (the protobufjs types the gRPC methods serialize
 * with): the message without its tensor, then the tensor without its values. Only the two length-delimited
 * prefixes that wrap them (the tensor field's and the values' tag and length) are written here, with field
 * numbers read from the loaded descriptors, so a field added to either message is carried without a change here.
 */
export interface MessageParts {
  readonly head: Buffer;
  readonly data: Buffer;
}

/** A field as proto-loader's DescriptorProto gives it. */
export interface FieldDescriptor {
  readonly name: string;
  readonly number: number;
  readonly label: string;
  readonly type: string;
  readonly typeName: string;
}

function isFieldDescriptor(f: unknown): f is FieldDescriptor {
  if (typeof f !== 'object' || f === null) return false;
  const r = f as Record<string, unknown>;
  return typeof r['name'] === 'string' && typeof r['number'] === 'number' && typeof r['label'] === 'string' && typeof r['type'] === 'string' && typeof r['typeName'] === 'string';
}

/** The fields of a message as loaded from the .proto (names as the loader gives them: camelCase). */
export function messageFields(definition: ProtobufTypeDefinition): FieldDescriptor[] {
  const fields: unknown = (definition.type as { field?: unknown }).field;
  if (!Array.isArray(fields) || !fields.every(isFieldDescriptor)) throw new TypeError('not a protobuf message descriptor (proto-loader changed its DescriptorProto form?)');
  return fields;
}

const LENGTH_DELIMITED = 2;

/** The tag of the singular length-delimited field `name` (of `type`) of a message, checked against the loaded descriptor. */
export function lengthDelimitedTag(definition: ProtobufTypeDefinition, message: string, name: string, type: 'TYPE_MESSAGE' | 'TYPE_BYTES'): number {
  const f = messageFields(definition).find((x) => x.name === name);
  if (!f || f.type !== type || f.label !== 'LABEL_OPTIONAL') {
    throw new TypeError(`${message}.${name} is no longer a singular ${type} field in the .proto: the frames' message parts rely on it; update packages/wire/src/message-parts.ts`);
  }
  return (f.number << 3) | LENGTH_DELIMITED;
}

/** Bytes of `v` (a non-negative integer below 2^53) as a protobuf varint. */
function varintBytes(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(out: Buffer, at: number, v: number): number {
  while (v >= 128) {
    out[at++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  out[at++] = v;
  return at;
}

/** The values as a Buffer over the same memory (a base64 string, which the input type allows, is decoded as protobufjs would). */
function valuesView(v: Uint8Array | string | undefined): Buffer {
  if (v === undefined) return Buffer.alloc(0);
  if (typeof v === 'string') return Buffer.from(v, 'base64');
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

let dataTag = -1;

/**
 * `before` (the message's other fields, serialized), then the field `tensorTag` holding `tensor`, its values last
 * (see MessageParts). `filler(bytes)`, given the head's length without it, returns serialized fields to write
 * between `before` and the tensor (e.g. to align the values), or nothing.
 */
export function tensorLastParts(before: Buffer, tensorTag: number, tensor: Tensor, filler?: (headBytes: number) => Buffer | null): MessageParts {
  const { data: values, ...meta } = tensor;
  const data = valuesView(values);
  const inner = expertmeshV1().Tensor.serialize(meta);
  if (dataTag < 0) dataTag = lengthDelimitedTag(expertmeshV1().Tensor, 'Tensor', 'data', 'TYPE_BYTES');
  // An empty values field is left out: proto3's default, it decodes the same.
  const dataPrefix = data.length ? varintBytes(dataTag) + varintBytes(data.length) : 0;
  const tensorBytes = inner.length + dataPrefix + data.length;
  const tail = varintBytes(tensorTag) + varintBytes(tensorBytes) + inner.length + dataPrefix;
  const fill = filler?.(before.length + tail) ?? null;
  const head = Buffer.allocUnsafe(before.length + (fill?.length ?? 0) + tail);
  let at = before.copy(head, 0);
  if (fill) at += fill.copy(head, at);
  at = writeVarint(head, at, tensorTag);
  at = writeVarint(head, at, tensorBytes);
  at += inner.copy(head, at);
  if (data.length) writeVarint(head, writeVarint(head, at, dataTag), data.length);
  return { head, data };
}
