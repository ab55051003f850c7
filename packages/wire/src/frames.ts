import { status } from '@grpc/grpc-js';
import { expertmeshV1 } from './proto.js';
import type { RunExpertsRequest, RunExpertsRequest__Output } from './generated/expertmesh/v1/RunExpertsRequest.js';
import type { RunExpertsResponse, RunExpertsResponse__Output } from './generated/expertmesh/v1/RunExpertsResponse.js';

/**
 * The framed hot path of the expert-compute call: length-prefixed frames over one TLS (or, where
 * plaintext gRPC is allowed, plain TCP) socket, carrying the protobuf messages RunExperts carries over
 * gRPC (written in parts by the router and the shard, the tensor last and its values from their own
 * memory: encodeRequestParts, encodeResponseParts; any protobuf reader reads them). It skips HTTP/2 (its 16 KiB DATA frames, flow control and per-stream state), which
 * measured as most of a call's fixed cost (docs/benchmarks.md, issue 14).
 *
 * Header, 68 bytes, little-endian:
 *   0  u16  magic 0x4d45 ("EM")
 *   2  u8   version (1)
 *   3  u8   kind (FrameKind)
 *   4  u32  request id (matches an answer, an error or a cancel to its request on the connection)
 *   8  u32  payload length (≤ the connection's maximum frame size: the gRPC message limit)
 *   12 u8   traceparent length (0 or 55)
 *   13 55B  W3C traceparent of the router's call span (ASCII), so shard spans stay its children
 * Payloads: REQUEST a RunExpertsRequest, RESPONSE a RunExpertsResponse, ERROR a u32 gRPC status
 * code and a UTF-8 message, CANCEL nothing (the caller gave up; an unstarted request is dropped).
 */
export const FRAME_MAGIC = 0x4d45;
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 68;
const TRACEPARENT_BYTES = 55;

export const FrameKind = { request: 1, response: 2, error: 3, cancel: 4 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];
const KINDS = new Set<number>(Object.values(FrameKind));

export interface FrameHeader {
  readonly kind: FrameKind;
  readonly requestId: number;
  readonly payloadBytes: number;
  /** The router's call span as a W3C traceparent, '' when none. */
  readonly traceparent: string;
}

/**
 * A frame that breaks the protocol: bad magic, version or kind, a payload over the limit, or a
 * payload that is not the message its kind says. The connection that carried it is closed (its
 * byte stream can no longer be trusted to be in step); other connections are untouched.
 */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    /** The gRPC status it is reported with: RESOURCE_EXHAUSTED for an oversized frame, INVALID_ARGUMENT otherwise. */
    readonly code: status,
    message: string,
    /** The request the frame claimed to be, when its header could be read (0 otherwise). */
    readonly requestId = 0,
  ) {
    super(message);
  }
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** A frame's header; the payload follows it on the wire (written separately: no copy of the payload). */
export function encodeFrameHeader(kind: FrameKind, requestId: number, payloadBytes: number, traceparent = ''): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt16LE(FRAME_MAGIC, 0);
  h.writeUInt8(FRAME_VERSION, 2);
  h.writeUInt8(kind, 3);
  h.writeUInt32LE(requestId >>> 0, 4);
  h.writeUInt32LE(payloadBytes, 8);
  if (TRACEPARENT.test(traceparent)) {
    h.writeUInt8(TRACEPARENT_BYTES, 12);
    h.write(traceparent, 13, TRACEPARENT_BYTES, 'latin1');
  }
  return h;
}

function decodeFrameHeader(h: Buffer, maxPayloadBytes: number): FrameHeader {
  if (h.readUInt16LE(0) !== FRAME_MAGIC) throw new FrameError(status.INVALID_ARGUMENT, 'not an ExpertMesh frame (bad magic): is this a gRPC or HTTP client on the frames port?');
  const version = h.readUInt8(2);
  if (version !== FRAME_VERSION) throw new FrameError(status.INVALID_ARGUMENT, `frame version ${version} is not ${FRAME_VERSION}: router and shard run incompatible versions`);
  const kind = h.readUInt8(3);
  const requestId = h.readUInt32LE(4);
  if (!KINDS.has(kind)) throw new FrameError(status.INVALID_ARGUMENT, `unknown frame kind ${kind}`, requestId);
  const payloadBytes = h.readUInt32LE(8);
  if (payloadBytes > maxPayloadBytes) {
    throw new FrameError(status.RESOURCE_EXHAUSTED, `frame of ${payloadBytes} bytes exceeds the limit of ${maxPayloadBytes} (the gRPC message limit, from --max-tokens-per-call): split the batch`, requestId);
  }
  const traceLength = h.readUInt8(12);
  if (traceLength !== 0 && traceLength !== TRACEPARENT_BYTES) throw new FrameError(status.INVALID_ARGUMENT, `traceparent length ${traceLength} is not 0 or ${TRACEPARENT_BYTES}`, requestId);
  const traceparent = traceLength ? h.toString('latin1', 13, 13 + TRACEPARENT_BYTES) : '';
  if (traceparent && !TRACEPARENT.test(traceparent)) throw new FrameError(status.INVALID_ARGUMENT, 'malformed traceparent in the frame header', requestId);
  return { kind: kind as FrameKind, requestId, payloadBytes, traceparent };
}

/**
 * Cuts a socket's byte stream into frames. A payload that arrived in one chunk is handed on as a
 * view of it; one spread over chunks is joined once (as grpc-js joins a message's DATA frames).
 * Throws FrameError on the first frame that breaks the protocol, before its payload is buffered.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private header: FrameHeader | null = null;

  constructor(
    private readonly maxPayloadBytes: number,
    private readonly onFrame: (header: FrameHeader, payload: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (!this.header) {
        if (this.buffered < FRAME_HEADER_BYTES) return;
        this.header = decodeFrameHeader(this.take(FRAME_HEADER_BYTES), this.maxPayloadBytes);
      }
      if (this.buffered < this.header.payloadBytes) return;
      const header = this.header;
      this.header = null;
      this.onFrame(header, this.take(header.payloadBytes));
    }
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

/** The RunExperts method's own (de)serializers: the frames carry the messages the gRPC call carries. */
const method = () => expertmeshV1().ExpertShardService.service.RunExperts;

export const encodeRequestMessage = (r: RunExpertsRequest): Buffer => method().requestSerialize(r);
export const encodeResponseMessage = (r: RunExpertsResponse): Buffer => method().responseSerialize(r);

/** The request in a REQUEST frame; FrameError (INVALID_ARGUMENT) when it is not one. */
export function decodeRequestMessage(payload: Buffer, requestId: number): RunExpertsRequest__Output {
  try {
    return method().requestDeserialize(payload) as RunExpertsRequest__Output;
  } catch (e) {
    throw new FrameError(status.INVALID_ARGUMENT, `request frame is not a RunExpertsRequest: ${(e as Error).message}`, requestId);
  }
}

/** The answer in a RESPONSE frame; FrameError (INTERNAL) when it is not one. */
export function decodeResponseMessage(payload: Buffer, requestId: number): RunExpertsResponse__Output {
  try {
    return method().responseDeserialize(payload) as RunExpertsResponse__Output;
  } catch (e) {
    throw new FrameError(status.INTERNAL, `response frame is not a RunExpertsResponse: ${(e as Error).message}`, requestId);
  }
}

export function encodeErrorPayload(code: status, message: string): Buffer {
  const text = Buffer.from(message.slice(0, 4000), 'utf8');
  const out = Buffer.allocUnsafe(4 + text.length);
  out.writeUInt32LE(code, 0);
  text.copy(out, 4);
  return out;
}

export function decodeErrorPayload(payload: Buffer): { code: status; message: string } {
  if (payload.length < 4) return { code: status.INTERNAL, message: 'malformed error frame' };
  return { code: payload.readUInt32LE(0) as status, message: payload.toString('utf8', 4) };
}
