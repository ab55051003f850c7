import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { bf16ToFloat32, DTYPE_BYTES, f16ToFloat32, fp8E4m3ToFloat32, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';
import { CheckpointError } from './errors.js';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute offset of the tensor's first byte in its file. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';
/** A header larger than this is not a real safetensors header (the format caps it at 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * Reads tensors from a Hugging Face safetensors checkpoint (one file, or shards listed by
 * model.safetensors.index.json) by byte range: only the headers are parsed up front, and each
 * tensor is read from its file when asked, so a 671B checkpoint costs no memory until used.
 */
export class SafetensorsCheckpoint {
  private readonly handles = new Map<string, Promise<FileHandle>>();

  private constructor(
    readonly dir: string,
    private readonly tensors: ReadonlyMap<string, TensorInfo>,
  ) {}

  /** Opens a checkpoint folder (index or single file) or one .safetensors file. */
  static async open(path: string): Promise<SafetensorsCheckpoint> {
    const isFile = path.endsWith('.safetensors');
    const dir = isFile ? dirname(path) : path;
    const { files, weightMap } = isFile ? { files: [basename(path)], weightMap: null } : await listShardFiles(dir);
    const tensors = new Map<string, TensorInfo>();
    for (const file of files) {
      for (const info of await readHeader(join(dir, file))) tensors.set(info.name, info);
    }
    // The index and the headers must agree, or the download is mixed up.
    for (const [name, file] of Object.entries(weightMap ?? {})) {
      const info = tensors.get(name);
      if (!info || basename(info.file) !== file) {
        throw new CheckpointError(`the index places this tensor in ${file} but that file's header does not hold it`, join(dir, file), name);
      }
    }
    return new SafetensorsCheckpoint(dir, tensors);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError('tensor not found in the checkpoint; is it the right model or a complete download?', this.dir, name);
    return info;
  }

  async readRaw(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    const handle = await this.handle(info.file);
    const out = new Uint8Array(info.byteLength);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await handle.read(out, done, out.length - done, info.byteOffset + done);
      if (bytesRead === 0) throw new CheckpointError(`file ends inside the tensor (truncated?): re-download it`, info.file, name);
      done += bytesRead;
    }
    return out;
  }

  /** The tensor's values as float32 (no FP8 block scaling: see readLinearWeight). */
  async readFloat32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    const raw = await this.readRaw(name);
    switch (info.dtype) {
      case 'F32':
        return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
      case 'BF16':
        return bf16ToFloat32(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2));
      case 'F16':
        return f16ToFloat32(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2));
      case 'F8_E4M3':
        return fp8E4m3ToFloat32(raw);
      default:
        throw new CheckpointError(`dtype ${info.dtype} cannot be read as floating point weights`, info.file, name);
    }
  }

  async close(): Promise<void> {
    const handles = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(handles.map(async (h) => (await h).close()));
  }

  private handle(file: string): Promise<FileHandle> {
    let h = this.handles.get(file);
    if (!h) {
      h = open(file, 'r');
      this.handles.set(file, h);
    }
    return h;
  }
}

async function listShardFiles(dir: string): Promise<{ files: string[]; weightMap: Record<string, string> | null }> {
  const indexPath = join(dir, INDEX_FILE);
  let indexText: string | null = null;
  try {
    indexText = await readFile(indexPath, 'utf8');
  } catch {
    // No index: a single-file checkpoint.
  }
  if (indexText === null) {
    try {
      await stat(join(dir, SINGLE_FILE));
    } catch {
      throw new CheckpointError(`neither ${INDEX_FILE} nor ${SINGLE_FILE} found: point --model at a Hugging Face checkpoint folder`, dir);
    }
    return { files: [SINGLE_FILE], weightMap: null };
  }
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (cause) {
    throw new CheckpointError(`is not valid JSON (${(cause as Error).message})`, indexPath, null, { cause });
  }
  const weightMap = (index as { weight_map?: unknown }).weight_map;
  if (!weightMap || typeof weightMap !== 'object') throw new CheckpointError('has no "weight_map" object', indexPath);
  const files = [...new Set(Object.values(weightMap as Record<string, unknown>))];
  for (const f of files) {
    if (typeof f !== 'string') throw new CheckpointError('"weight_map" values must be file names', indexPath);
    try {
      await stat(join(dir, f));
    } catch {
      const tensor = Object.entries(weightMap as Record<string, string>).find(([, v]) => v === f)?.[0] ?? null;
      throw new CheckpointError(`shard file ${f} listed in the index is missing: the download is incomplete`, join(dir, f), tensor);
    }
  }
  return { files: files as string[], weightMap: weightMap as Record<string, string> };
}

async function readHeader(path: string): Promise<TensorInfo[]> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    throw new CheckpointError(`cannot open (${(cause as Error).message})`, path, null, { cause });
  }
  try {
    const size = (await handle.stat()).size;
    if (size < 8) throw new CheckpointError('is too short to be a safetensors file (truncated?)', path);
    const lengthBytes = Buffer.alloc(8);
    await handle.read(lengthBytes, 0, 8, 0);
    const headerLength = Number(lengthBytes.readBigUInt64LE(0));
    if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
      throw new CheckpointError(`header length ${headerLength} does not fit in the file of ${size} bytes (corrupt or truncated)`, path);
    }
    const headerBytes = Buffer.alloc(headerLength);
    await handle.read(headerBytes, 0, headerLength, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBytes.toString('utf8')) as Record<string, unknown>;
    } catch (cause) {
      throw new CheckpointError(`header is not valid JSON (corrupt file): ${(cause as Error).message}`, path, null, { cause });
    }
    const dataStart = 8 + headerLength;
    const infos: TensorInfo[] = [];
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      infos.push(parseEntry(path, name, entry, dataStart, size));
    }
    return infos;
  } finally {
    await handle.close();
  }
}

function parseEntry(path: string, name: string, entry: unknown, dataStart: number, fileSize: number): TensorInfo {
  const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof e.dtype !== 'string' || !isSafetensorsDtype(e.dtype)) throw new CheckpointError(`unknown dtype ${String(e.dtype)}`, path, name);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new CheckpointError('shape is not a list of sizes', path, name);
  const offsets = e.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0) || offsets[1] < offsets[0]) {
    throw new CheckpointError('data_offsets is not [begin, end]', path, name);
  }
  const shape = e.shape as number[];
  const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype];
  const [begin, end] = offsets as [number, number];
  if (end - begin !== expected) {
    throw new CheckpointError(`data_offsets span ${end - begin} bytes but ${e.dtype}[${shape.join(', ')}] needs ${expected} (corrupt header)`, path, name);
  }
  if (dataStart + end > fileSize) {
    throw new CheckpointError(`tensor data ends at byte ${dataStart + end} but the file has ${fileSize} (truncated): re-download it`, path, name);
  }
  return { name, dtype: e.dtype, shape, file: path, byteOffset: dataStart + begin, byteLength: expected };
}
