import { describe, expect, it } from 'vitest';
import {
  decodeRequestMessage,
  decodeTensor,
  encodeFrameHeader,
  encodePairs,
  encodeRequestMessage,
  encodeRequestParts,
  encodeTensor,
  expertmeshV1,
  FrameKind,
  FrameReader,
  type RunExpertsRequest,
  type RunExpertsRequest__Output,
  type WireDtype,
} from '../src/index.js';
import { unsetFields } from './unset-fields.js';

const H = 48;
const values = (rows: number, seed = 0): Float32Array => Float32Array.from({ length: rows * H }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + (i % 5)));

/** A request as the router sends one: `fingerprint` and `requestId` vary where the hidden states fall in the message. */
function request(rows: number, dtype: WireDtype, fingerprint: string, requestId: number): RunExpertsRequest {
  const tokenRows = Int32Array.from({ length: rows * 2 }, (_, i) => i >> 1);
  return {
    requestId,
    modelFingerprint: fingerprint,
    layer: 3,
    hidden: encodeTensor(values(rows, requestId), rows, H, dtype),
    ...encodePairs({ tokenRows, expertIds: Int32Array.from(tokenRows, (r, i) => (r * 3 + i) % 16), weights: Float32Array.from(tokenRows, (_, i) => 0.25 + i / 64) }),
    outputDtype: 'TENSOR_DTYPE_FLOAT32',
    traceContext: { tracestate: 'vendor=1' },
  };
}

/** What a shard reads, without the filler (which readers ignore). */
function decoded(payload: Buffer): Omit<RunExpertsRequest__Output, 'hiddenAlignment'> {
  const { hiddenAlignment: _ignored, ...rest } = decodeRequestMessage(payload, 1);
  return rest;
}

/** Frames as one socket read delivers them, back to back, in a buffer of its own (as a TCP or TLS read is: offset 0). */
function oneRead(payloads: readonly (readonly Buffer[])[]): Buffer {
  const frames = payloads.flatMap((parts, i) => [encodeFrameHeader(FrameKind.request, i + 1, parts.reduce((a, p) => a + p.length, 0)), ...parts]);
  const read = Buffer.from(new ArrayBuffer(frames.reduce((a, f) => a + f.length, 0)));
  Buffer.concat(frames).copy(read);
  return read;
}

/** The payloads of the frames in `read`, cut as the shard's listener cuts them. */
function framesOf(read: Buffer): Buffer[] {
  const out: Buffer[] = [];
  new FrameReader(2 ** 24, (_, payload) => out.push(payload)).push(read);
  return out;
}

/**
 * The router's frames request in two parts (head, then the hidden states as a view of the caller's tensor), the
 * values placed at a multiple of 4 bytes into the message (a `hidden_alignment` filler before them where needed):
 * one message that decodes as the serializer's does, which a shard reads as float32 in place.
 */
describe('encodeRequestParts', () => {
  const shapes = [1, 2, 3, 7, 40].flatMap((rows) => [0, 1, 2, 3, 5].flatMap((f) => [1, 300, 2 ** 20 + 1].map((id) => ({ rows, fingerprint: 'ab12'.repeat(4).slice(0, 11 + f), id }))));

  for (const dtype of ['float32', 'bfloat16', 'fp8'] as WireDtype[]) {
    it(`${dtype}: decodes as the serializer's bytes do, the values aligned to 4 and not copied, over ${shapes.length} layouts`, () => {
      const offsets = new Set<number>();
      for (const { rows, fingerprint, id } of shapes) {
        const r = request(rows, dtype, fingerprint, id);
        const serialized = encodeRequestMessage(r);
        offsets.add(serialized.indexOf(r.hidden!.data as Buffer) % 4);
        const { head, data } = encodeRequestParts(r);
        expect(decoded(Buffer.concat([head, data]))).toEqual(decoded(serialized));
        expect(head.length % 4).toBe(0);
        // Float32 values end the message on a multiple of 4 too: the frame after it in a read stays aligned.
        if (dtype === 'float32') expect((head.length + data.length) % 4).toBe(0);
        expect(data.buffer).toBe((r.hidden!.data as Buffer).buffer);
        expect(data.byteOffset).toBe((r.hidden!.data as Buffer).byteOffset);
        // At most 3 filler bytes and their tag and length: never longer than the serializer's by more than 5.
        expect(head.length + data.length).toBeLessThanOrEqual(serialized.length + 5);
      }
      // The layouts cover every offset the serializer puts the values at (so the filler took each of its sizes).
      expect([...offsets].sort()).toEqual([0, 1, 2, 3]);
    });
  }

  it('a shard decodes the router\'s float32 hidden states as a view of the read (no copy), a serializer\'s misaligned ones as a copy', () => {
    const routers = [request(3, 'float32', 'abc', 1), request(5, 'float32', 'abcd', 300), request(1, 'float32', 'a', 2 ** 20 + 1)];
    const routerRead = oneRead(routers.map((r) => {
      const { head, data } = encodeRequestParts(r);
      return [head, data];
    }));
    const payloads = framesOf(routerRead);
    expect(payloads).toHaveLength(routers.length);
    payloads.forEach((payload, i) => {
      const { values: hidden, rows } = decodeTensor(decodeRequestMessage(payload, i + 1).hidden, 'hidden', H);
      expect(Array.from(hidden)).toEqual(Array.from(values(rows, routers[i]!.requestId as number)));
      expect(hidden.buffer).toBe(routerRead.buffer); // in place: a view of the read, every frame of it
    });
    // Another client's message (the method's serializer), whose values fall at an odd offset: still read, as a copy.
    const other = ['', 'a', 'ab', 'abc'].map((f) => request(2, 'float32', f, 9)).find((r) => (encodeRequestMessage(r).indexOf(r.hidden!.data as Buffer) + 68) % 4 !== 0)!;
    const otherRead = oneRead([[encodeRequestMessage(other)]]);
    const [payload] = framesOf(otherRead);
    const req = decodeRequestMessage(payload!, 1);
    expect(req.hidden!.data.byteOffset % 4).not.toBe(0);
    const { values: hidden } = decodeTensor(req.hidden, 'hidden', H);
    expect(Array.from(hidden)).toEqual(Array.from(values(2, 9)));
    expect(hidden.buffer).not.toBe(otherRead.buffer);
  });

  it('a request with every field of the .proto set decodes as the serializer\'s (a field added to the message is carried)', () => {
    const r = request(4, 'fp8', 'fingerprint', 2 ** 33 + 5);
    const { head, data } = encodeRequestParts(r);
    const got = decodeRequestMessage(Buffer.concat([head, data]), 1);
    expect(decoded(Buffer.concat([head, data]))).toEqual(decoded(encodeRequestMessage(r)));
    // A field added to either message makes this fail until the case above sets it: the round trip then checks it is carried.
    expect(unsetFields(expertmeshV1().RunExpertsRequest, got, ['hiddenAlignment'])).toEqual([]);
    expect(unsetFields(expertmeshV1().Tensor, got.hidden ?? {})).toEqual([]);
  });

  it('a request without hidden states is the serializer\'s message', () => {
    const { hidden: _none, ...r } = request(1, 'float32', 'ab', 4);
    const { head, data } = encodeRequestParts(r);
    expect(data.length).toBe(0);
    expect(decoded(head)).toEqual(decoded(encodeRequestMessage(r)));
  });
});
