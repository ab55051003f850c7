import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Test-only checkpoint reading, written apart from the project's loader on purpose: whole files,
 * plain loops, float64 out. If the two readers disagreed, the correctness tests would say so.
 */
export interface F64Tensor {
  readonly shape: number[];
  readonly data: Float64Array;
}

function fp8e4m3(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 15;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  return e === 0 ? sign * m * Math.pow(2, -9) : sign * Math.pow(2, e - 7) * (1 + m / 8);
}

function bf16(bits: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, bits << 16);
  return view.getFloat32(0);
}

function f16(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 31;
  const m = bits & 1023;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

export function decodeValue(dtype: string, bytes: Buffer, i: number): number {
  switch (dtype) {
    case 'F32':
      return bytes.readFloatLE(i * 4);
    case 'BF16':
      return bf16(bytes.readUInt16LE(i * 2));
    case 'F16':
      return f16(bytes.readUInt16LE(i * 2));
    case 'F8_E4M3':
      return fp8e4m3(bytes[i]!);
    default:
      throw new Error(`reference reader: unsupported dtype ${dtype}`);
  }
}

export function readAllTensors(dir: string): Map<string, F64Tensor & { dtype: string }> {
  const files = existsSync(join(dir, 'model.safetensors.index.json'))
    ? [...new Set(Object.values((JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> }).weight_map))]
    : ['model.safetensors'];
  const out = new Map<string, F64Tensor & { dtype: string }>();
  for (const f of files) {
    const buf = readFileSync(join(dir, f));
    const headerLength = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const base = 8 + headerLength;
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const bytes = buf.subarray(base + e.data_offsets[0], base + e.data_offsets[1]);
      const n = e.shape.reduce((a, b) => a * b, 1);
      const data = new Float64Array(n);
      for (let i = 0; i < n; i++) data[i] = decodeValue(e.dtype, bytes, i);
      out.set(name, { shape: e.shape, data, dtype: e.dtype });
    }
  }
  return out;
}

/** A weight in float64; FP8 weights are multiplied by their block scales. */
export function weightF64(tensors: Map<string, F64Tensor & { dtype: string }>, name: string, block: [number, number] | null): F64Tensor {
  const t = tensors.get(name);
  if (!t) throw new Error(`reference: missing tensor ${name}`);
  if (t.dtype !== 'F8_E4M3') return t;
  const s = tensors.get(name.replace(/\.weight$/, '.weight_scale_inv'));
  if (!s || !block) throw new Error(`reference: FP8 tensor ${name} without scales`);
  const [rows, cols] = t.shape as [number, number];
  const data = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      data[r * cols + c] = t.data[r * cols + c]! * s.data[Math.floor(r / block[0]) * s.shape[1]! + Math.floor(c / block[1])]!;
    }
  }
  return { shape: t.shape, data };
}
