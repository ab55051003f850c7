import type { FileHandle } from 'node:fs/promises';
import { DTYPE_BYTES, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';
import { CheckpointError } from './errors.js';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Path of the .safetensors file holding the tensor. */
  readonly file: string;
  /** Absolute offset of the tensor's first byte in its file. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>>;
}

/** The format caps the header at 100 MB; a larger length means a corrupt or non-safetensors file. */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * Reads and validates one file's header through an open handle: the 8-byte little-endian length,
 * the JSON, and every entry's dtype, shape and data_offsets against the data section and the file
 * size, so a truncated or corrupt file fails here, before any tensor is read.
 */
export async function readSafetensorsHeader(handle: FileHandle, path: string): Promise<SafetensorsHeader> {
  const size = (await handle.stat()).size;
  if (size < 8) throw new CheckpointError(`is ${size} bytes, too short to be a safetensors file (truncated?): re-download it`, path);
  const headerLength = Number((await readExactly(handle, path, 8, 0)).readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
    throw new CheckpointError(`header length ${headerLength} does not fit in the file of ${size} bytes (corrupt or truncated): re-download it`, path);
  }
  const text = (await readExactly(handle, path, headerLength, 8)).toString('utf8');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (cause) {
    throw new CheckpointError(`header is not valid JSON (corrupt file: re-download it): ${(cause as Error).message}`, path, null, { cause });
  }
  if (!isPlainObject(header)) throw new CheckpointError('header is not a JSON object (corrupt file): re-download it', path);
  const dataStart = 8 + headerLength;
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name !== '__metadata__') tensors.push(parseEntry(path, name, entry, dataStart, size));
  }
  checkNoOverlap(path, tensors);
  return { tensors, metadata: parseMetadata(path, header.__metadata__) };
}

async function readExactly(handle: FileHandle, path: string, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new CheckpointError(`file ends inside the header (truncated): re-download it`, path);
    done += bytesRead;
  }
  return buf;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function parseEntry(path: string, name: string, entry: unknown, dataStart: number, fileSize: number): TensorInfo {
  if (!isPlainObject(entry)) throw new CheckpointError('header entry is not an object {dtype, shape, data_offsets} (corrupt header)', path, name);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string' || !isSafetensorsDtype(dtype)) throw new CheckpointError(`unknown dtype ${String(dtype)} (corrupt header or an unsupported format)`, path, name);
  if (!Array.isArray(shape) || !shape.every((d): d is number => Number.isSafeInteger(d) && d >= 0)) {
    throw new CheckpointError(`shape ${JSON.stringify(shape)} is not a list of sizes (corrupt header)`, path, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o): o is number => Number.isSafeInteger(o) && o >= 0) || offsets[1] < offsets[0]) {
    throw new CheckpointError(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] (corrupt header)`, path, name);
  }
  const [begin, end] = offsets as [number, number];
  const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
  if (end - begin !== expected) {
    throw new CheckpointError(`data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype}[${shape.join(', ')}] needs ${expected} (corrupt header)`, path, name);
  }
  if (dataStart + end > fileSize) {
    throw new CheckpointError(`tensor data ends at byte ${dataStart + end} but the file has ${fileSize} (truncated): re-download it`, path, name);
  }
  return { name, dtype, shape, file: path, byteOffset: dataStart + begin, byteLength: expected };
}

/** Two tensors sharing bytes means a corrupt header (the official library rejects it too). */
function checkNoOverlap(path: string, tensors: readonly TensorInfo[]): void {
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      throw new CheckpointError(`data_offsets overlap those of "${prev.name}" (corrupt header): re-download it`, path, cur.name);
    }
  }
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (!isPlainObject(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
    throw new CheckpointError('"__metadata__" is not an object of strings (corrupt header)', path);
  }
  return raw as Record<string, string>;
}
