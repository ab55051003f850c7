import { describe, expect, it } from 'vitest';
import {
  bf16ToFloat32,
  f16ToFloat32,
  float32ToBf16,
  float32ToBf16Bytes,
  float32ToFp8E4m3,
  FP8_E4M3_TABLE,
  fp8E4m3ToFloat32,
  halfToNumber,
  numberToHalf,
} from '../src/index.js';

describe('float8_e4m3fn', () => {
  it('decodes known codes as PyTorch does', () => {
    const codes = Uint8Array.from([0x00, 0x80, 0x38, 0xb8, 0x7e, 0xfe, 0x01, 0x07, 0x08, 0x40]);
    expect(Array.from(fp8E4m3ToFloat32(codes))).toEqual([0, -0, 1, -1, 448, -448, 2 ** -9, 7 * 2 ** -9, 2 ** -6, 2]);
    expect(FP8_E4M3_TABLE[0x7f]).toBeNaN();
    expect(FP8_E4M3_TABLE[0xff]).toBeNaN();
  });

  it('round-trips every finite code', () => {
    for (let code = 0; code < 256; code++) {
      if ((code & 0x7f) === 0x7f) continue;
      expect(float32ToFp8E4m3(FP8_E4M3_TABLE[code]!)).toBe(code);
    }
  });

  it('rounds to nearest, ties to even, and saturates', () => {
    expect(float32ToFp8E4m3(1.0625)).toBe(0x38); // halfway 1 and 1.125 → even mantissa (1.0)
    expect(float32ToFp8E4m3(1.1875)).toBe(0x3a); // halfway 1.125 and 1.25 → 1.25 (even)
    expect(float32ToFp8E4m3(1.1)).toBe(0x39);
    expect(float32ToFp8E4m3(1e6)).toBe(0x7e);
    expect(float32ToFp8E4m3(-1e6)).toBe(0xfe);
    expect(float32ToFp8E4m3(NaN)).toBe(0x7f);
    expect(float32ToFp8E4m3(2 ** -11)).toBe(0x00); // below half the smallest subnormal: ties to 0
  });
});

describe('bfloat16', () => {
  it('decodes every code to the float32 with those top bits', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f = bf16ToFloat32(all);
    const view = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < 65536; i += 97) {
      view.setUint32(0, i << 16);
      const expected = view.getFloat32(0);
      if (Number.isNaN(expected)) expect(f[i]).toBeNaN();
      else expect(f[i]).toBe(expected);
    }
  });

  it('encodes with round-to-nearest-even and keeps NaN', () => {
    expect(float32ToBf16(1)).toBe(0x3f80);
    expect(float32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(float32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(float32ToBf16(1 + 2 ** -7)).toBe(0x3f81);
    expect(bf16ToFloat32(Uint16Array.of(float32ToBf16(NaN)))[0]).toBeNaN();
    const values = Float32Array.from([0.1, -2.5, 3e38, 1e-40]);
    const bytes = float32ToBf16Bytes(values);
    const back = bf16ToFloat32(new Uint16Array(bytes.buffer));
    values.forEach((v, i) => expect(back[i]).toBe(bf16ToFloat32(Uint16Array.of(float32ToBf16(v)))[0]));
  });
});

describe('float16', () => {
  it('round-trips every code', () => {
    for (let h = 0; h < 65536; h++) {
      const v = halfToNumber(h);
      if (Number.isNaN(v)) continue;
      expect(numberToHalf(v)).toBe(h);
    }
  });

  it('decodes known values', () => {
    expect(Array.from(f16ToFloat32(Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00])))).toEqual([1, -2, 65504, 2 ** -24, Infinity]);
  });

  it('rounds ties to even', () => {
    expect(numberToHalf(1 + 2 ** -11)).toBe(0x3c00);
    expect(numberToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(numberToHalf(1e6)).toBe(0x7c00);
  });
});
