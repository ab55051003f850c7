import { describe, expect, it } from 'vitest';
import {
  bf16ToFloat32,
  bytesToFloat32,
  f16ToFloat32,
  float32ToBf16,
  float32ToBf16Bytes,
  float32ToF16Bytes,
  float32ToFp8E4m3,
  float32ToFp8E4m3Array,
  float32ToFp8E4m3Bytes,
  FP8_E4M3_TABLE,
  fp8E4m3ToFloat32,
  halfToNumber,
  numberToHalf,
} from '../src/index.js';

// ---- independent oracles -------------------------------------------------------------------

const bitsToF32 = (bits: number): number => new Float32Array(Uint32Array.of(bits).buffer)[0]!;
const f32ToBits = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0]!;
const nextUp = (x: number): number => bitsToF32(f32ToBits(x) + 1); // for positive finite x
const nextDown = (x: number): number => bitsToF32(f32ToBits(x) - 1);

/** Half value through float64 bits (a different route from the decoder's float32 bit rebias). */
function halfViaFloat64(h: number): number {
  const sign = h >> 15;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign ? -Infinity : Infinity;
  if (e === 0) return (sign ? -m : m) / 16777216; // m · 2^-24
  const view = new DataView(new ArrayBuffer(8));
  view.setUint32(0, (sign << 31) | ((e - 15 + 1023) << 20) | (m << 10));
  return view.getFloat64(0);
}

/**
 * The correctly rounded code by search: `values[code]` are the non-negative finite values in code
 * order, `above` the value just past the largest (infinity's stand-in, or null to saturate).
 */
function nearestCode(a: number, values: readonly number[], above: number | null): number {
  const max = values.length - 1;
  if (a >= values[max]!) {
    if (above === null || a - values[max]! < above - a || (a - values[max]! === above - a && max % 2 === 1)) return max;
    return max + 1;
  }
  let lo = 0;
  let hi = max;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - values[lo]!;
  const dHi = values[hi]! - a;
  return dLo < dHi || (dLo === dHi && lo % 2 === 0) ? lo : hi;
}

function randomBits(n: number, seed: number): Uint32Array {
  let s = seed >>> 0;
  return Uint32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  });
}

/** Checks an encoder against the oracle on every tie between neighbouring codes and just either side of it. */
function checkMidpoints(encode: (x: number) => number, values: readonly number[], signBit: number): void {
  for (let k = 0; k + 1 < values.length; k++) {
    const mid = (values[k]! + values[k + 1]!) / 2;
    expect(Math.fround(mid)).toBe(mid); // the tie itself is a float32
    const even = k % 2 === 0 ? k : k + 1;
    for (const [x, want] of [
      [mid, even],
      [nextDown(mid), k],
      [nextUp(mid), k + 1],
    ] as const) {
      const got = encode(x);
      const gotNeg = encode(-x);
      if (got !== want || gotNeg !== (signBit | want)) expect({ x, got, gotNeg }).toEqual({ x, got: want, gotNeg: signBit | want });
    }
  }
}

// ---- float8_e4m3fn ---------------------------------------------------------------------------

const fp8Positive = Array.from(FP8_E4M3_TABLE.subarray(0, 0x7f)); // codes 0..0x7e, 0 .. 448

describe('float8_e4m3fn', () => {
  it('decodes all 256 codes by the bit formula (bias 7, subnormals, NaN only at 0x7F/0xFF)', () => {
    const all = fp8E4m3ToFloat32(Uint8Array.from({ length: 256 }, (_, i) => i));
    for (let code = 0; code < 256; code++) {
      const s = code >> 7 ? -1 : 1;
      const e = (code >> 3) & 0xf;
      const m = code & 7;
      if ((code & 0x7f) === 0x7f) expect(all[code]).toBeNaN();
      else expect(all[code]).toBe(e === 0 ? s * m * 2 ** -9 : s * (8 + m) * 2 ** (e - 10));
    }
    expect(Array.from(fp8E4m3ToFloat32(Uint8Array.from([0x00, 0x80, 0x38, 0xb8, 0x7e, 0xfe, 0x01, 0x07, 0x08, 0x40])))).toEqual([
      0, -0, 1, -1, 448, -448, 2 ** -9, 7 * 2 ** -9, 2 ** -6, 2,
    ]);
  });

  it('round-trips all 256 codes (NaN codes decode to NaN and encode back to a NaN code)', () => {
    for (let code = 0; code < 256; code++) {
      const back = float32ToFp8E4m3(FP8_E4M3_TABLE[code]!);
      if ((code & 0x7f) === 0x7f) expect(back & 0x7f).toBe(0x7f);
      else expect(back).toBe(code);
    }
    expect(float32ToFp8E4m3(NaN)).toBe(0x7f);
    expect(float32ToFp8E4m3(bitsToF32(0xffc00000))).toBe(0xff); // a negative NaN keeps its sign, as in PyTorch
    expect(float32ToFp8E4m3(-0)).toBe(0x80);
  });

  it('rounds every tie to even and everything else to nearest', () => {
    checkMidpoints(float32ToFp8E4m3, fp8Positive, 0x80);
    expect(float32ToFp8E4m3(1.0625)).toBe(0x38); // between 1 and 1.125 → 1 (even)
    expect(float32ToFp8E4m3(1.1875)).toBe(0x3a); // between 1.125 and 1.25 → 1.25 (even)
    expect(float32ToFp8E4m3(2 ** -10)).toBe(0x00); // half the smallest subnormal → 0
    expect(float32ToFp8E4m3(3 * 2 ** -10)).toBe(0x02); // 1.5 units → 2 (even)
  });

  it('saturates to ±448 instead of producing NaN or infinity', () => {
    for (const x of [448, 449, 464, 480, 1e6, 3.4e38, Infinity]) {
      expect(float32ToFp8E4m3(x)).toBe(0x7e);
      expect(float32ToFp8E4m3(-x)).toBe(0xfe);
    }
  });

  it('matches a search over the code table for random float32s, scalar and array encoders alike', () => {
    const bits = randomBits(50_000, 7);
    // Spread the exponents over fp8's range so most samples are interesting.
    for (let i = 0; i < bits.length; i++) bits[i] = (bits[i]! & 0x807fffff) | ((110 + (bits[i]! % 30)) << 23);
    const values = new Float32Array(bits.buffer);
    const bytes = float32ToFp8E4m3Bytes(values);
    const viaArray = new Uint8Array(values.length + 3);
    float32ToFp8E4m3Array(values, 1, viaArray, 3);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      const want = (v < 0 ? 0x80 : 0) | nearestCode(Math.abs(v), fp8Positive, null);
      if (bytes[i] !== want || viaArray[i + 3] !== want || float32ToFp8E4m3(v) !== want) expect({ v, got: bytes[i] }).toEqual({ v, got: want });
    }
  });
});

// ---- bfloat16 ------------------------------------------------------------------------------

describe('bfloat16', () => {
  it('decodes all 65536 codes to the float32 with those top 16 bits', () => {
    const all = bf16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    const view = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < 65536; i++) {
      view.setUint32(0, i * 65536);
      const expected = view.getFloat32(0);
      if (Number.isNaN(expected)) expect(all[i]).toBeNaN();
      else if (all[i] !== expected || Object.is(all[i], -0) !== Object.is(expected, -0)) expect(all[i]).toBe(expected);
    }
  });

  it('round-trips all 65536 codes (NaN stays NaN)', () => {
    const all = bf16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    for (let i = 0; i < 65536; i++) {
      const back = float32ToBf16(all[i]!);
      if (Number.isNaN(all[i])) expect(Number.isNaN(bf16ToFloat32(Uint16Array.of(back))[0])).toBe(true);
      else if (back !== i) expect(back).toBe(i);
    }
  });

  it('rounds every tie to even and everything else to nearest; overflow goes to infinity', () => {
    const positive = Array.from(bf16ToFloat32(Uint16Array.from({ length: 0x7f81 }, (_, i) => i))); // 0 .. +inf
    checkMidpoints(float32ToBf16, positive.slice(0, 0x7f80), 0x8000);
    expect(float32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(float32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(float32ToBf16(bitsToF32(0x7f7fffff))).toBe(0x7f80); // float32 max rounds up to +inf, as in PyTorch
    expect(float32ToBf16(-Infinity)).toBe(0xff80);
  });

  it('array encoder matches the scalar one and keeps NaN', () => {
    const values = new Float32Array(randomBits(50_000, 11).buffer);
    const bytes = new Uint16Array(float32ToBf16Bytes(values).buffer);
    for (let i = 0; i < values.length; i++) {
      if (Number.isNaN(values[i])) expect(bf16ToFloat32(bytes.subarray(i, i + 1))[0]).toBeNaN();
      else if (bytes[i] !== float32ToBf16(values[i]!)) expect(bytes[i]).toBe(float32ToBf16(values[i]!));
    }
  });
});

// ---- IEEE half -----------------------------------------------------------------------------

describe('float16', () => {
  it('decodes all 65536 codes as IEEE half (checked through float64 bits)', () => {
    const all = f16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    for (let h = 0; h < 65536; h++) {
      const want = halfViaFloat64(h);
      if (Number.isNaN(want)) {
        expect(all[h]).toBeNaN();
        expect(halfToNumber(h)).toBeNaN();
      } else if (!Object.is(all[h], want) || !Object.is(halfToNumber(h), want)) {
        expect({ h, array: all[h], scalar: halfToNumber(h) }).toEqual({ h, array: want, scalar: want });
      }
    }
  });

  it('decodes values PyTorch prints for known codes', () => {
    const codes = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x3555, 0x3bff, 0x3c01, 0x7c00, 0xfc00, 0x8000];
    const want = [1, -2, 65504, 5.960464477539063e-8, 6.097555160522461e-5, 6.103515625e-5, 0.333251953125, 0.99951171875, 1.0009765625, Infinity, -Infinity, -0];
    expect(Array.from(f16ToFloat32(Uint16Array.from(codes)))).toEqual(want);
    expect(f16ToFloat32(Uint16Array.of(0x7e00))[0]).toBeNaN();
  });

  it('round-trips all 65536 codes (NaN stays NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const v = halfToNumber(h);
      if (Number.isNaN(v)) expect(Number.isNaN(halfToNumber(numberToHalf(v)))).toBe(true);
      else if (numberToHalf(v) !== h) expect(numberToHalf(v)).toBe(h);
    }
  });

  it('rounds every tie to even (subnormals included); 65520 and above go to infinity', () => {
    const positive = Array.from({ length: 0x7c00 }, (_, h) => halfToNumber(h)); // 0 .. 65504
    checkMidpoints(numberToHalf, positive, 0x8000);
    expect(numberToHalf(1 + 2 ** -11)).toBe(0x3c00);
    expect(numberToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(numberToHalf(2 ** -25)).toBe(0x0000); // half the smallest subnormal → 0 (even)
    expect(numberToHalf(nextUp(2 ** -25))).toBe(0x0001);
    expect(numberToHalf(65519.99)).toBe(0x7bff);
    expect(numberToHalf(65520)).toBe(0x7c00);
    expect(numberToHalf(-1e6)).toBe(0xfc00);
    expect(numberToHalf(1e-30)).toBe(0x0000);
    expect(numberToHalf(-0)).toBe(0x8000);
  });

  it('matches a search over all halves for random float32s, scalar and array encoders alike', () => {
    const positive = Array.from({ length: 0x7c00 }, (_, h) => halfToNumber(h));
    const bits = randomBits(50_000, 5);
    for (let i = 0; i < bits.length; i++) bits[i] = (bits[i]! & 0x807fffff) | ((98 + (bits[i]! % 46)) << 23);
    const values = new Float32Array(bits.buffer);
    const bytes = new Uint16Array(float32ToF16Bytes(values).buffer);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      const want = (v < 0 ? 0x8000 : 0) | nearestCode(Math.abs(v), positive, 65536);
      if (bytes[i] !== want || numberToHalf(v) !== want) expect({ v, got: bytes[i] }).toEqual({ v, got: want });
    }
  });
});

describe('bytesToFloat32', () => {
  it('decodes each float dtype from little-endian bytes, even at an odd byte offset', () => {
    const f32 = new Uint8Array(Float32Array.of(1.5, -2).buffer);
    const shifted = new Uint8Array(9);
    shifted.set(f32, 1);
    expect(Array.from(bytesToFloat32('F32', shifted.subarray(1)))).toEqual([1.5, -2]);
    expect(Array.from(bytesToFloat32('BF16', Uint8Array.of(0x80, 0x3f, 0x00, 0xc0)))).toEqual([1, -2]);
    expect(Array.from(bytesToFloat32('F16', Uint8Array.of(0x00, 0x3c, 0x00, 0xc0)))).toEqual([1, -2]);
    expect(Array.from(bytesToFloat32('F8_E4M3', Uint8Array.of(0x38, 0xc0)))).toEqual([1, -2]);
    expect(() => bytesToFloat32('F32', new Uint8Array(3))).toThrow(/not a whole number of F32/);
  });
});
