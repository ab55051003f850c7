import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Test-only reader for a Hugging Face safetensors checkpoint folder, written apart from the
 * project's loader on purpose: whole files, plain loops, float64 out. If the two readers
 * disagreed, the correctness tests would say so.
 *
 * File format: 8-byte little-endian header length N, then N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {...} }`, then the data;
 * offsets count from the first byte after the header. Values are little-endian, row-major.
 */

export interface F64Tensor {
  readonly shape: number[];
  readonly data: Float64Array;
}

/** A tensor as stored: its values decoded to float64, but not yet multiplied by any FP8 scales. */
export interface StoredTensor extends F64Tensor {
  readonly dtype: string;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const BYTES_PER_VALUE: Record<string, number> = { F64: 8, F32: 4, BF16: 2, F16: 2, F8_E4M3: 1 };

// ---------------------------------------------------------------------------------------------
// Scalar decoders
// ---------------------------------------------------------------------------------------------

/**
 * float8_e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits. No infinities; only
 * S.1111.111 (0x7F, 0xFF) is NaN, so the largest finite value is 0x7E = 2^8 · 1.75 = 448.
 * Exponent 0 holds the subnormals m · 2^-9.
 */
export function decodeF8E4M3(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const exponent = (byte >> 3) & 0x0f;
  const mantissa = byte & 0x07;
  if (exponent === 0x0f && mantissa === 0x07) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * 2 ** (exponent - 7) * (1 + mantissa / 8);
}

/** float16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits, with subnormals, inf and NaN. */
export function decodeF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** bfloat16: the upper 16 bits of a float32. */
export function decodeBF16(bits: number): number {
  u32Scratch[0] = (bits << 16) >>> 0;
  return f32Scratch[0]!;
}

/** Value `i` of a tensor whose raw little-endian bytes are `bytes`. */
export function decodeValue(dtype: string, bytes: Buffer, i: number): number {
  switch (dtype) {
    case 'F64':
      return bytes.readDoubleLE(i * 8);
    case 'F32':
      return bytes.readFloatLE(i * 4);
    case 'BF16':
      return decodeBF16(bytes.readUInt16LE(i * 2));
    case 'F16':
      return decodeF16(bytes.readUInt16LE(i * 2));
    case 'F8_E4M3':
      return decodeF8E4M3(bytes[i]!);
    default:
      throw new Error(`reference reader: unsupported dtype ${dtype}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** The safetensors files of a checkpoint folder: the shards named by the index, or the single file. */
export function checkpointFiles(dir: string): string[] {
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> };
    return [...new Set(Object.values(index.weight_map))].sort();
  }
  if (existsSync(join(dir, 'model.safetensors'))) return ['model.safetensors'];
  throw new Error(`reference reader: neither model.safetensors.index.json nor model.safetensors in ${dir}`);
}

/** Every tensor of one safetensors file, decoded to float64. */
export function readSafetensorsFile(path: string): Map<string, StoredTensor> {
  const buf = readFileSync(path);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, HeaderEntry>;
  const dataStart = 8 + headerLength;
  const out = new Map<string, StoredTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const count = entry.shape.reduce((a, b) => a * b, 1);
    const width = BYTES_PER_VALUE[entry.dtype];
    if (width === undefined) throw new Error(`reference reader: ${name} has unsupported dtype ${entry.dtype}`);
    const [begin, end] = entry.data_offsets;
    if (end - begin !== count * width) throw new Error(`reference reader: ${name} has ${end - begin} bytes, expected ${count * width}`);
    const bytes = buf.subarray(dataStart + begin, dataStart + end);
    const data = new Float64Array(count);
    for (let i = 0; i < count; i++) data[i] = decodeValue(entry.dtype, bytes, i);
    out.set(name, { dtype: entry.dtype, shape: [...entry.shape], data });
  }
  return out;
}

/** Every tensor of a checkpoint folder (all shards), as stored. */
export function readAllTensors(dir: string): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const file of checkpointFiles(dir)) {
    for (const [name, tensor] of readSafetensorsFile(join(dir, file))) {
      if (out.has(name)) throw new Error(`reference reader: tensor ${name} appears in more than one shard`);
      out.set(name, tensor);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// FP8 block scales
// ---------------------------------------------------------------------------------------------

/**
 * The float64 value of weight `name`. An F8_E4M3 weight `X.weight` [rows, cols] is multiplied
 * block-wise by `X.weight_scale_inv` [ceil(rows/bo), ceil(cols/bi)] where [bo, bi] is
 * quantization_config.weight_block_size: W[r][c] = q[r][c] · scale[floor(r/bo)][floor(c/bi)].
 * (Despite its name, weight_scale_inv is multiplied, as DeepSeek's weight_dequant does.)
 */
export function weightF64(tensors: Map<string, StoredTensor>, name: string, blockSize: readonly [number, number] | null): F64Tensor {
  const t = tensors.get(name);
  if (!t) throw new Error(`reference: missing tensor ${name}`);
  if (t.dtype !== 'F8_E4M3') return { shape: t.shape, data: t.data };

  const scaleName = name.replace(/\.weight$/, '.weight_scale_inv');
  const scale = tensors.get(scaleName);
  if (!scale) throw new Error(`reference: FP8 tensor ${name} without ${scaleName}`);
  if (!blockSize) throw new Error(`reference: FP8 tensor ${name} but config.json has no quantization_config.weight_block_size`);
  if (t.shape.length !== 2) throw new Error(`reference: FP8 tensor ${name} is not 2-D`);
  const [rows, cols] = t.shape as [number, number];
  const [bo, bi] = blockSize;
  const scaleRows = Math.ceil(rows / bo);
  const scaleCols = Math.ceil(cols / bi);
  if (scale.shape.length !== 2 || scale.shape[0] !== scaleRows || scale.shape[1] !== scaleCols) {
    throw new Error(`reference: ${scaleName} has shape [${scale.shape}], expected [${scaleRows}, ${scaleCols}]`);
  }
  const data = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const s = scale.data[Math.floor(r / bo) * scaleCols + Math.floor(c / bi)]!;
      data[r * cols + c] = t.data[r * cols + c]! * s;
    }
  }
  return { shape: t.shape, data };
}

/**
 * Every weight of a checkpoint folder in float64, FP8 weights already multiplied by their block
 * scales (the `.weight_scale_inv` tensors themselves are left out).
 */
export function readCheckpointF64(dir: string, blockSize: readonly [number, number] | null): Map<string, F64Tensor> {
  const stored = readAllTensors(dir);
  const out = new Map<string, F64Tensor>();
  for (const name of stored.keys()) {
    if (name.endsWith('.weight_scale_inv')) continue;
    out.set(name, weightF64(stored, name, blockSize));
  }
  return out;
}
