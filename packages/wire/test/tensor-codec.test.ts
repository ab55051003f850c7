import { describe, expect, it } from 'vitest';
import type { Tensor__Output } from '../src/index.js';
import { decodePairs, decodeTensor, encodePairs, encodeTensor, wireBytes, WireFormatError } from '../src/index.js';

const values = Float32Array.from({ length: 3 * 8 }, (_, i) => Math.sin(i) * (i % 8 === 0 ? 100 : 1));
const asOutput = (t: ReturnType<typeof encodeTensor>): Tensor__Output => ({
  dtype: t.dtype as Tensor__Output['dtype'],
  shape: t.shape as number[],
  data: Buffer.from(t.data as Buffer),
  rowScales: Buffer.from((t.rowScales as Buffer | undefined) ?? Buffer.alloc(0)),
});

describe('tensor codec', () => {
  it('float32 round-trips exactly', () => {
    const { values: back, rows } = decodeTensor(asOutput(encodeTensor(values, 3, 8, 'float32')), 'x', 8);
    expect(rows).toBe(3);
    expect(back).toEqual(values);
  });

  it('bfloat16 keeps 8 significant bits', () => {
    const back = decodeTensor(asOutput(encodeTensor(values, 3, 8, 'bfloat16')), 'x', 8).values;
    values.forEach((v, i) => expect(Math.abs(back[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -8));
  });

  it('fp8 scales each row by its own largest value, so a large row does not crush a small one', () => {
    const t = encodeTensor(values, 3, 8, 'fp8');
    expect((t.data as Buffer).length).toBe(24);
    expect((t.rowScales as Buffer).length).toBe(12);
    const back = decodeTensor(asOutput(t), 'x', 8).values;
    for (let r = 0; r < 3; r++) {
      const row = values.subarray(r * 8, r * 8 + 8);
      const amax = Math.max(...row.map(Math.abs));
      row.forEach((v, c) => expect(Math.abs(back[r * 8 + c]! - v)).toBeLessThanOrEqual(amax / 16));
    }
  });

  it('counts wire bytes', () => {
    expect(wireBytes('float32', 3, 8)).toBe(96);
    expect(wireBytes('bfloat16', 3, 8)).toBe(48);
    expect(wireBytes('fp8', 3, 8)).toBe(24 + 12);
  });

  it('names what is wrong with a malformed tensor', () => {
    const good = asOutput(encodeTensor(values, 3, 8, 'float32'));
    expect(() => decodeTensor(null, 'hidden', 8)).toThrow(/hidden is missing/);
    expect(() => decodeTensor({ ...good, shape: [3, 4] }, 'hidden', 8)).toThrow(/shape \[3, 4\]; expected \[tokens, 8\]/);
    expect(() => decodeTensor({ ...good, data: good.data.subarray(1) }, 'hidden', 8)).toThrow(WireFormatError);
    expect(() => decodeTensor({ ...asOutput(encodeTensor(values, 3, 8, 'fp8')), rowScales: Buffer.alloc(4) }, 'hidden', 8)).toThrow(/row-scale bytes/);
  });

  it('reads float32 from an unaligned buffer', () => {
    const t = asOutput(encodeTensor(values, 3, 8, 'float32'));
    const shifted = Buffer.alloc(t.data.length + 1);
    t.data.copy(shifted, 1);
    expect(decodeTensor({ ...t, data: shifted.subarray(1) }, 'x', 8).values).toEqual(values);
  });
});

describe('expert pairs', () => {
  it('round-trip and reject rows outside the tensor', () => {
    const p = { tokenRows: Int32Array.of(0, 1, 1), expertIds: Int32Array.of(4, 2, 9), weights: Float32Array.of(0.5, 0.25, 0.125) };
    const e = encodePairs(p);
    const back = decodePairs(Buffer.from(e.pairTokenRows), Buffer.from(e.pairExpertIds), Buffer.from(e.pairWeights), 2);
    expect(back).toEqual(p);
    expect(() => decodePairs(Buffer.from(e.pairTokenRows), Buffer.from(e.pairExpertIds), Buffer.from(e.pairWeights), 1)).toThrow(/token row 1 but hidden has 1 rows/);
    expect(() => decodePairs(Buffer.from(e.pairTokenRows), Buffer.alloc(4), Buffer.from(e.pairWeights), 2)).toThrow(/equal multiples of 4/);
  });
});
