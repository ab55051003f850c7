import { describe, expect, it } from 'vitest';
import { decodeResponseMessage, encodeResponseMessage, encodeResponseParts, encodeTensor, expertmeshV1, type RunExpertsResponse, type WireDtype } from '../src/index.js';
import { unsetFields } from './unset-fields.js';

const values = (rows: number, cols: number): Float32Array => Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.61) * (1 + (i % 7)));

/**
 * The frames' answer in two parts (head, then the values as a view of the tensor's memory): one message
 * that decodes to exactly what the gRPC method's serializer gives, with no copy of the values.
 */
describe('encodeResponseParts', () => {
  const cases: [string, RunExpertsResponse][] = [
    ...(['float32', 'bfloat16', 'fp8'] as WireDtype[]).map((d): [string, RunExpertsResponse] => [d, { requestId: 77, output: encodeTensor(values(5, 48), 5, 48, d), computeMicros: 1234, queueMicros: 56 }]),
    ['large ids and times (multi-byte varints)', { requestId: 2 ** 40 + 3, output: encodeTensor(values(300, 64), 300, 64, 'float32'), computeMicros: 2 ** 33, queueMicros: 0 }],
    ['zeros, and an empty output', { requestId: 0, output: encodeTensor(new Float32Array(0), 0, 64, 'float32'), computeMicros: 0, queueMicros: 0 }],
  ];
  for (const [name, response] of cases) {
    it(`${name}: head + data decode as the serializer's bytes do`, () => {
      const { head, data } = encodeResponseParts(response);
      const whole = Buffer.concat([head, data]);
      expect(decodeResponseMessage(whole, 1)).toEqual(decodeResponseMessage(encodeResponseMessage(response), 1));
      // No longer than the serializer's (which also writes fields set to zero; protobuf's default needs no bytes).
      expect(whole.length).toBeLessThanOrEqual(encodeResponseMessage(response).length);
    });
  }

  it('a response with every field of the .proto set (the output\'s too) decodes as the serializer\'s', () => {
    const response: RunExpertsResponse = { requestId: 2 ** 35 + 9, output: encodeTensor(values(6, 40), 6, 40, 'fp8'), computeMicros: 4321, queueMicros: 987 };
    const { head, data } = encodeResponseParts(response);
    const decoded = decodeResponseMessage(Buffer.concat([head, data]), 1);
    expect(decoded).toEqual(decodeResponseMessage(encodeResponseMessage(response), 1));
    // A field added to either message makes this fail until the case above sets it: the round trip then checks it is carried.
    expect(unsetFields(expertmeshV1().RunExpertsResponse, decoded)).toEqual([]);
    expect(unsetFields(expertmeshV1().Tensor, decoded.output ?? {})).toEqual([]);
  });

  it('the values are not copied: data is a view of the output tensor', () => {
    const out = values(8, 32);
    const { head, data } = encodeResponseParts({ requestId: 1, output: encodeTensor(out, 8, 32, 'float32'), computeMicros: 1, queueMicros: 1 });
    expect(data.buffer).toBe(out.buffer);
    expect(data.byteLength).toBe(out.byteLength);
    expect(head.length).toBeLessThan(32);
  });
});
