/**
 * Conversions between float32 and the storage dtypes of Hugging Face checkpoints.
 * BF16 is the top half of a float32; F16 is IEEE half; F8_E4M3 is PyTorch's float8_e4m3fn
 * (bias 7, 3 mantissa bits, no infinities, 0x7F/0xFF NaN, max ±448).
 */
export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BYTES, s);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Value of every float8_e4m3fn code. */
export const FP8_E4M3_TABLE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exp = (code >> 3) & 0xf;
    const man = code & 0x7;
    if (exp === 0xf && man === 0x7) t[code] = NaN;
    else if (exp === 0) t[code] = sign * (man / 8) * 2 ** -6;
    else t[code] = sign * (1 + man / 8) * 2 ** (exp - 7);
  }
  return t;
})();

export const FP8_E4M3_MAX = 448;

export function fp8E4m3ToFloat32(codes: Uint8Array): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = FP8_E4M3_TABLE[codes[i]!]!;
  return out;
}

/**
 * Round to nearest even, saturating to ±448; NaN → 0x7F. Works on the float32 bits (no search), as
 * the wire codec quantises every dispatched activation with it.
 */
export function float32ToFp8E4m3(value: number): number {
  f32[0] = value;
  const bits = u32[0]!;
  const sign = (bits >>> 24) & 0x80;
  const absBits = bits & 0x7fffffff;
  if (absBits > 0x7f800000) return 0x7f;
  const a = f32[0] < 0 ? -f32[0] : f32[0];
  if (a >= FP8_E4M3_MAX) return sign | 0x7e;
  if (a < 2 ** -6) {
    // Subnormal range: whole units of 2^-9, ties to even (code 8 is the smallest normal, 2^-6).
    const units = a * 512;
    const floor = Math.floor(units);
    const frac = units - floor;
    const code = frac > 0.5 || (frac === 0.5 && (floor & 1) === 1) ? floor + 1 : floor;
    return sign | code;
  }
  let exp = (absBits >>> 23) - 127;
  let mant = (absBits >>> 20) & 0x7;
  const rest = absBits & 0xfffff;
  if (rest > 0x80000 || (rest === 0x80000 && (mant & 1) === 1)) mant++;
  if (mant === 8) {
    mant = 0;
    exp++;
  }
  const code = ((exp + 7) << 3) | mant;
  return sign | Math.min(code, 0x7e);
}

/** Quantises a whole array (codes only; scaling is the caller's). */
export function float32ToFp8E4m3Array(values: Float32Array, scale: number, out: Uint8Array, outOffset = 0): void {
  const inv = 1 / scale;
  for (let i = 0; i < values.length; i++) out[outOffset + i] = float32ToFp8E4m3(values[i]! * inv);
}

export function bf16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i]! << 16;
  return out;
}

/** float32 → bf16 bits, round to nearest even; NaN stays NaN. */
export function float32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function float32ToBf16Bytes(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const x = bits[i]!;
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return new Uint8Array(out.buffer);
}

export function f16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfToNumber(bits[i]!);
  return out;
}

export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** float → IEEE half bits, round to nearest even, overflow to infinity. */
export function numberToHalf(value: number): number {
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  let a = Math.abs(value);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) {
    // Subnormal: units of 2^-24, round half to even.
    const units = a / 2 ** -24;
    let r = Math.round(units);
    if (units - Math.floor(units) === 0.5 && Math.floor(units) % 2 === 0) r = Math.floor(units);
    return sign | r;
  }
  let exp = Math.floor(Math.log2(a));
  if (2 ** exp > a) exp--;
  if (2 ** (exp + 1) <= a) exp++;
  a = a / 2 ** exp - 1; // [0, 1)
  const units = a * 1024;
  let man = Math.round(units);
  if (units - Math.floor(units) === 0.5 && Math.floor(units) % 2 === 0) man = Math.floor(units);
  if (man === 1024) {
    man = 0;
    exp++;
  }
  if (exp + 15 >= 0x1f) return sign | 0x7c00;
  return sign | ((exp + 15) << 10) | man;
}
