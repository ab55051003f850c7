import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { decodeErrorPayload, decodeRequestMessage, encodeErrorPayload, encodeFrameHeader, encodeRequestMessage, FRAME_HEADER_BYTES, FrameError, FrameKind, FrameReader, type FrameHeader } from '../src/index.js';

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const frame = (kind: FrameKind, id: number, payload: Buffer, traceparent = ''): Buffer => Buffer.concat([encodeFrameHeader(kind, id, payload.length, traceparent), payload]);

function collect(maxPayloadBytes = 1 << 20): { reader: FrameReader; frames: { header: FrameHeader; payload: Buffer }[] } {
  const frames: { header: FrameHeader; payload: Buffer }[] = [];
  return { reader: new FrameReader(maxPayloadBytes, (header, payload) => frames.push({ header, payload: Buffer.from(payload) })), frames };
}

describe('frames', () => {
  it('cuts a byte stream into frames however it is chunked: one byte at a time, several frames per chunk', () => {
    const payloads = [Buffer.alloc(0), Buffer.from('a'), Buffer.alloc(70_000, 7), Buffer.from('last')];
    const stream = Buffer.concat(payloads.map((p, i) => frame(FrameKind.response, i + 1, p, i === 2 ? TRACEPARENT : '')));
    for (const chunk of [1, 13, FRAME_HEADER_BYTES, 16_384, stream.length]) {
      const { reader, frames } = collect();
      for (let at = 0; at < stream.length; at += chunk) reader.push(stream.subarray(at, at + chunk));
      expect(frames.map((f) => f.header.requestId)).toEqual([1, 2, 3, 4]);
      frames.forEach((f, i) => expect(f.payload.equals(payloads[i]!)).toBe(true));
      expect(frames.map((f) => f.header.traceparent)).toEqual(['', '', TRACEPARENT, '']);
    }
  });

  it('refuses a payload over the limit from its header, before any of it arrives', () => {
    const { reader, frames } = collect(1000);
    let caught: unknown = null;
    try {
      reader.push(encodeFrameHeader(FrameKind.request, 9, 1001));
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(FrameError);
    expect((caught as FrameError).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((caught as FrameError).requestId).toBe(9);
    expect((caught as FrameError).message).toMatch(/frame of 1001 bytes exceeds the limit of 1000/);
    expect(frames).toEqual([]);
  });

  it('refuses bad magic, an unknown version or kind, and a payload that is not a request', () => {
    const bad = (mutate: (h: Buffer) => void, pattern: RegExp): void => {
      const h = encodeFrameHeader(FrameKind.request, 3, 0);
      mutate(h);
      expect(() => collect().reader.push(h)).toThrow(pattern);
    };
    bad((h) => h.writeUInt16LE(0x5447, 0), /bad magic/);
    bad((h) => h.writeUInt8(2, 2), /frame version 2 is not 1/);
    bad((h) => h.writeUInt8(42, 3), /unknown frame kind 42/);
    bad((h) => h.writeUInt8(20, 12), /traceparent length 20/);
    expect(() => decodeRequestMessage(Buffer.alloc(16, 0xff), 5)).toThrow(/not a RunExpertsRequest/);
  });

  it('carries the RunExperts message bytes unchanged, and errors as a status code and a message', () => {
    const message = encodeRequestMessage({ requestId: 4, modelFingerprint: 'ab', layer: 3, pairTokenRows: Buffer.from([1, 0, 0, 0]), outputDtype: 'TENSOR_DTYPE_FLOAT32' });
    const { reader, frames } = collect();
    reader.push(frame(FrameKind.request, 4, message));
    expect(frames[0]!.payload.equals(message)).toBe(true);
    const request = decodeRequestMessage(frames[0]!.payload, 4);
    expect([request.layer, request.modelFingerprint, request.outputDtype]).toEqual([3, 'ab', 'TENSOR_DTYPE_FLOAT32']);
    expect(decodeErrorPayload(encodeErrorPayload(status.FAILED_PRECONDITION, 'not held'))).toEqual({ code: status.FAILED_PRECONDITION, message: 'not held' });
  });
});
