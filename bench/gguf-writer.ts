/**
 * A GGUF (version 3) file writer: the metadata key/values, the tensor directory, then each tensor's
 * bytes at a 32-byte aligned offset. Layout as in ggml's docs/gguf.md and gguf-py: little-endian,
 * strings as u64 length + UTF-8, tensor dims listed fastest-first (ne[0] = the contiguous axis).
 * Tensors are produced one at a time by a callback, so a converter never holds the whole model.
 */
import { open } from 'node:fs/promises';

export const GGML_TYPE = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgmlType = keyof typeof GGML_TYPE;

export type GgufValue =
  | { readonly u32: number }
  | { readonly f32: number }
  | { readonly bool: boolean }
  | { readonly str: string }
  | { readonly strs: readonly string[] }
  | { readonly i32s: readonly number[] };

export interface GgufTensor {
  readonly name: string;
  /** Dims fastest-first, as ggml's ne. */
  readonly ne: readonly number[];
  readonly type: GgmlType;
  /** The tensor's bytes in `type`, produced when the writer reaches it. */
  readonly data: () => Promise<Uint8Array>;
}

const ALIGNMENT = 32;
const VALUE_TYPE = { u32: 4, i32: 5, f32: 6, bool: 7, str: 8, array: 9 } as const;

/** Bytes of `count` elements (a multiple of the block size for block types). */
export function ggmlBytes(type: GgmlType, count: number): number {
  if (type === 'F32') return 4 * count;
  if (type === 'F16' || type === 'BF16') return 2 * count;
  if (count % 32 !== 0) throw new RangeError(`Q8_0 needs rows of a multiple of 32 values, not ${count}`);
  return (count / 32) * 34;
}

class ByteSink {
  private readonly parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  value(v: GgufValue): void {
    if ('u32' in v) { this.u32(VALUE_TYPE.u32); this.u32(v.u32); }
    else if ('f32' in v) { this.u32(VALUE_TYPE.f32); const b = Buffer.alloc(4); b.writeFloatLE(v.f32); this.push(b); }
    else if ('bool' in v) { this.u32(VALUE_TYPE.bool); this.push(Buffer.from([v.bool ? 1 : 0])); }
    else if ('str' in v) { this.u32(VALUE_TYPE.str); this.str(v.str); }
    else if ('strs' in v) { this.u32(VALUE_TYPE.array); this.u32(VALUE_TYPE.str); this.u64(v.strs.length); for (const s of v.strs) this.str(s); }
    else { this.u32(VALUE_TYPE.array); this.u32(VALUE_TYPE.i32); this.u64(v.i32s.length); const b = Buffer.alloc(4 * v.i32s.length); v.i32s.forEach((x, i) => b.writeInt32LE(x, 4 * i)); this.push(b); }
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const pad = (n: number): number => (ALIGNMENT - (n % ALIGNMENT)) % ALIGNMENT;

export async function writeGguf(path: string, metadata: Readonly<Record<string, GgufValue>>, tensors: readonly GgufTensor[]): Promise<void> {
  const head = new ByteSink();
  head.push(Buffer.from('GGUF', 'ascii'));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(Object.keys(metadata).length);
  for (const [k, v] of Object.entries(metadata)) {
    head.str(k);
    head.value(v);
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    head.str(t.name);
    head.u32(t.ne.length);
    for (const d of t.ne) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    const size = ggmlBytes(t.type, t.ne.reduce((a, d) => a * d, 1));
    sizes.push(size);
    offset += size + pad(size);
  }
  const file = await open(path, 'w');
  try {
    const header = head.bytes();
    await file.write(header);
    await file.write(Buffer.alloc(pad(header.length)));
    for (const [i, t] of tensors.entries()) {
      const data = await t.data();
      if (data.length !== sizes[i]) throw new Error(`${t.name}: ${data.length} bytes, expected ${sizes[i]}`);
      await file.write(data);
      await file.write(Buffer.alloc(pad(data.length)));
    }
  } finally {
    await file.close();
  }
}

/** ggml's Q8_0: per 32 values one float16 scale d = max|x| / 127 and 32 int8 codes round(x / d). */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = Buffer.alloc(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(values[b * 32 + i]!));
    const d = amax / 127;
    const inv = d ? 1 / d : 0;
    out.writeUInt16LE(float16Bits(d), b * 34);
    for (let i = 0; i < 32; i++) out.writeInt8(Math.round(values[b * 32 + i]! * inv), b * 34 + 2 + i);
  }
  return out;
}

/** IEEE half bits of a float, rounded to nearest even (scales are positive and in range). */
function float16Bits(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    const half = (mant >>> shift) + (((mant >>> (shift - 1)) & 1) & (((mant & ((1 << (shift - 1)) - 1)) !== 0 ? 1 : 0) | ((mant >>> shift) & 1)));
    return sign | half;
  }
  if (exp >= 31) return sign | 0x7c00;
  let h = (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}
