import type { ProtobufTypeDefinition } from '@grpc/proto-loader';
import { expertmeshV1 } from './proto.js';
import type { RunExpertsResponse } from './generated/expertmesh/v1/RunExpertsResponse.js';

/**
 * A RunExpertsResponse as the protobuf bytes the frames carry, in two parts: `head`, every field but the
 * output's values (a few dozen bytes), and `data`, the output's values themselves, a view of the
 * tensor's own memory. Written one after the other they are one valid message: the output's values go
 * last inside the output, which goes last in the response (protobuf readers take fields in any order).
 * The serializer of the gRPC method copies the values into a new buffer per answer; this does not:
 * on a shard that was one allocation outside V8's heap per call, the size of the answer (issue 16).
 *
 * The head is written by the encoders loaded from the .proto (the same protobufjs types the gRPC method
 * serializes with): the response without its output, then the output without its values. Only the two
 * length-delimited prefixes that wrap them (the output's and the values' tag and length) are written
 * here, with field numbers read from the loaded descriptors, so a field added to either message is
 * carried without a change here.
 */
export interface ResponseParts {
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

/** The tag of a singular length-delimited field `name` of a message, checked against the loaded descriptor. */
function lengthDelimitedTag(definition: ProtobufTypeDefinition, message: string, name: string, type: string): number {
  const f = messageFields(definition).find((x) => x.name === name);
  if (!f || f.type !== type || f.label !== 'LABEL_OPTIONAL') {
    throw new TypeError(`${message}.${name} is no longer a singular ${type} field in the .proto: encodeResponseParts relies on it; update packages/wire/src/response-parts.ts`);
  }
  return (f.number << 3) | LENGTH_DELIMITED;
}

interface Tags {
  readonly output: number;
  readonly data: number;
}
let tags: Tags | null = null;

function loadedTags(): Tags {
  const v1 = expertmeshV1();
  tags ??= {
    output: lengthDelimitedTag(v1.RunExpertsResponse, 'RunExpertsResponse', 'output', 'TYPE_MESSAGE'),
    data: lengthDelimitedTag(v1.Tensor, 'Tensor', 'data', 'TYPE_BYTES'),
  };
  return tags;
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

/** The two parts of `r` (see ResponseParts); `head.length + data.length` is the message's length. */
export function encodeResponseParts(r: RunExpertsResponse): ResponseParts {
  const v1 = expertmeshV1();
  const { output, ...rest } = r;
  const outer = v1.RunExpertsResponse.serialize(rest);
  if (!output) return { head: outer, data: Buffer.alloc(0) };
  const { data: values, ...meta } = output;
  const data = valuesView(values);
  const inner = v1.Tensor.serialize(meta);
  const t = loadedTags();
  // An empty values field is left out: proto3's default, it decodes the same.
  const dataPrefix = data.length ? varintBytes(t.data) + varintBytes(data.length) : 0;
  const tensorBytes = inner.length + dataPrefix + data.length;
  const head = Buffer.allocUnsafe(outer.length + varintBytes(t.output) + varintBytes(tensorBytes) + inner.length + dataPrefix);
  let at = outer.copy(head, 0);
  at = writeVarint(head, at, t.output);
  at = writeVarint(head, at, tensorBytes);
  at += inner.copy(head, at);
  if (data.length) writeVarint(head, writeVarint(head, at, t.data), data.length);
  return { head, data };
}
