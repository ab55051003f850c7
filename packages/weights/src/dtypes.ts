/**
 * Conversions between float32 and the storage dtypes of Hugging Face checkpoints.
 * BF16 is the top half of a float32; F16 is IEEE half; F8_E4M3 is PyTorch's float8_e4m3fn
 * (bias 7, 3 mantissa bits, no infinities, 0x7F/0xFF NaN, max ±448).
 *
 * Every encoder rounds the float32 bits once, to nearest even. Scalar encoders take a JS number
 * and first round it to float32; that double rounding is harmless because float32 carries more
 * than twice the target's precision plus two bits (24 ≥ 2·11 + 2), so the result is the
 * correctly rounded one. All byte layouts are little-endian, like safetensors (and every host
 * Node runs on).
 */
export type SafetensorsDtype =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'F8_E8M0'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

/** The dtypes this package can turn into float32 weights. */
export type FloatDtype = 'F32' | 'BF16' | 'F16' | 'F8_E4M3';

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BYTES, s);
}

export function isFloatDtype(dtype: SafetensorsDtype): dtype is FloatDtype {
  return dtype === 'F32' || dtype === 'BF16' || dtype === 'F16' || dtype === 'F8_E4M3';
}

// Scratch for reading a number's float32 bits without allocating.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function float32Bits(value: number): number {
  f32[0] = value;
  return u32[0]!;
}

// ---------------------------------------------------------------------------------------------
// float8_e4m3fn

/** Value of every float8_e4m3fn code (the decode lookup table). */
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
 * Round to nearest even, saturating to ±448 (PyTorch's own cast would give NaN from 480 up;
 * saturation is what DeepSeek's quantiser gets by clamping first). NaN → 0x7F/0xFF by sign.
 * Works on the float32 bits (no search), as the wire codec quantises every dispatched activation.
 */
export function float32ToFp8E4m3(value: number): number {
  const bits = float32Bits(value);
  const sign = (bits >>> 24) & 0x80;
  const absBits = bits & 0x7fffffff;
  if (absBits > 0x7f800000) return sign | 0x7f;
  if (absBits >= 0x43e00000) return sign | 0x7e; // ≥ 448, infinity included
  if (absBits < 0x3c800000) {
    // Below 2^-6, the smallest normal: whole units of 2^-9 (code 1), ties to even. The scaled value is exact in a double.
    const units = Math.abs(f32[0]!) * 512;
    const floor = Math.floor(units);
    const frac = units - floor;
    return sign | (frac > 0.5 || (frac === 0.5 && (floor & 1) === 1) ? floor + 1 : floor);
  }
  // Rebias the exponent (127 → 7) and keep 3 mantissa bits; a carry out of the mantissa correctly bumps the exponent.
  let code = (absBits - 0x3c000000) >>> 20;
  const rest = absBits & 0xfffff;
  if (rest > 0x80000 || (rest === 0x80000 && (code & 1) === 1)) code++;
  return sign | Math.min(code, 0x7e);
}

/** Quantises a whole array into `out` at `outOffset`, dividing by `scale` first (the wire codec's per-row scale). */
export function float32ToFp8E4m3Array(values: Float32Array, scale: number, out: Uint8Array, outOffset = 0): void {
  const inv = 1 / scale;
  for (let i = 0; i < values.length; i++) out[outOffset + i] = float32ToFp8E4m3(values[i]! * inv);
}

/** float32 → float8_e4m3fn codes, unscaled (see fp8-block.ts for DeepSeek's block scaling). */
export function float32ToFp8E4m3Bytes(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFp8E4m3(values[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// bfloat16

export function bf16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i]! << 16;
  return out;
}

/** bf16 bits of a float32's bits: round to nearest even; NaN stays NaN (quiet bit set so truncation cannot make it ±inf). */
function bf16FromBits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → bf16 bits, round to nearest even; NaN stays NaN. */
export function float32ToBf16(value: number): number {
  return bf16FromBits(float32Bits(value));
}

export function float32ToBf16Bytes(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = bf16FromBits(bits[i]!);
  return new Uint8Array(out.buffer);
}

// ---------------------------------------------------------------------------------------------
// IEEE half (F16)

export function f16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = (h & 0x8000) << 16;
    const exp = h & 0x7c00;
    const man = h & 0x3ff;
    if (exp === 0x7c00) outBits[i] = sign | 0x7f800000 | (man << 13); // ±inf, NaN with its payload
    else if (exp !== 0) outBits[i] = sign | ((exp + 0x1c000) << 13) | (man << 13); // rebias 15 → 127
    else out[i] = (sign ? -man : man) * 2 ** -24; // ±0 and subnormals, exact in float32 (-0 · 2^-24 stays -0)
  }
  return out;
}

/** One half's value (scalar convenience; arrays should use f16ToFloat32). */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** Half bits of a float32's bits: round to nearest even, overflow to ±inf, subnormals, NaN → quiet NaN. */
function halfFromBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00;
  if (a >= 0x477ff000) return sign | 0x7c00; // ≥ 65520 (the tie above 65504 goes to even: infinity)
  if (a >= 0x38800000) {
    // Normal half: rebias the exponent (127 → 15) and keep 10 mantissa bits; a carry bumps the exponent.
    let h = (a - 0x38000000) >>> 13;
    const rest = a & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return sign | h;
  }
  // Subnormal half: count units of 2^-24. Below 2^-25 everything rounds to zero (and the shift would wrap).
  const exp = a >>> 23;
  const shift = 126 - exp;
  if (shift > 24) return sign;
  const man = (a & 0x7fffff) | 0x800000;
  let h = man >>> shift;
  const rest = man & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (h & 1) === 1)) h++;
  return sign | h;
}

/** float → IEEE half bits, round to nearest even, overflow to infinity. */
export function numberToHalf(value: number): number {
  return halfFromBits(float32Bits(value));
}

export function float32ToF16Bytes(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = halfFromBits(bits[i]!);
  return new Uint8Array(out.buffer);
}

// ---------------------------------------------------------------------------------------------

/**
 * Little-endian bytes of a float dtype → float32 values. F32 comes back as a view over the same
 * bytes (copied first only when misaligned); the other dtypes decode into a new array.
 */
export function bytesToFloat32(dtype: FloatDtype, bytes: Uint8Array): Float32Array {
  const width = DTYPE_BYTES[dtype];
  if (bytes.byteLength % width !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} values`);
  const b = bytes.byteOffset % width === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'F32':
      return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    case 'BF16':
      return bf16ToFloat32(new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2));
    case 'F16':
      return f16ToFloat32(new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2));
    case 'F8_E4M3':
      return fp8E4m3ToFloat32(b);
  }
}
