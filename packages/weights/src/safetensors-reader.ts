import { open, type FileHandle } from 'node:fs/promises';
import { bytesToFloat32, DTYPE_BYTES, isFloatDtype } from './dtypes.js';
import { byChunks, CHUNK_VALUES } from './loop-turns.js';
import { CheckpointError } from './errors.js';
import { readCheckpointLayout, type CheckpointLayout, type CheckpointLayouts } from './checkpoint-layout.js';
import type { TensorInfo } from './safetensors-header.js';

/**
 * Reads tensors from a Hugging Face safetensors checkpoint (one file, or shards listed by
 * model.safetensors.index.json) by byte range: only the headers are parsed up front, and each
 * tensor is read from its file when asked, so a 671B checkpoint costs no memory until used.
 * File handles stay open (one per shard) until close().
 */
export class SafetensorsCheckpoint {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private closed = false;

  private constructor(private readonly layout: CheckpointLayout) {}

  /** The checkpoint's folder. */
  get dir(): string {
    return this.layout.dir;
  }

  /** The index file, or the single .safetensors file: named in errors about the whole checkpoint. */
  get source(): string {
    return this.layout.source;
  }

  /**
   * Opens a checkpoint folder (index or single file) or one .safetensors file, validating every header.
   * With `layouts`, a checkpoint opened before through them is not parsed again while its files are unchanged.
   */
  static async open(path: string, layouts?: CheckpointLayouts): Promise<SafetensorsCheckpoint> {
    return new SafetensorsCheckpoint(layouts ? await layouts.get(path) : await readCheckpointLayout(path));
  }

  names(): string[] {
    return [...this.layout.tensors.keys()];
  }

  has(name: string): boolean {
    return this.layout.tensors.has(name);
  }

  /** The union of the files' `__metadata__` (e.g. {format: 'pt'}). */
  metadata(): Readonly<Record<string, string>> {
    return this.layout.metadata;
  }

  info(name: string): TensorInfo {
    const info = this.layout.tensors.get(name);
    if (!info) throw new CheckpointError('tensor not found in the checkpoint; is it the right model or a complete download?', this.source, name);
    return info;
  }

  /**
   * The tensor's bytes exactly as stored (little-endian), read from its byte range only; with
   * `maxBytes`, only its first `maxBytes` bytes (a sample of a tensor of gigabytes costs no more).
   */
  async readRaw(name: string, maxBytes = Infinity): Promise<Uint8Array> {
    const info = this.info(name);
    return this.readInto(info, name, new Uint8Array(Math.min(info.byteLength, Math.max(0, maxBytes))));
  }

  /** The first out.length bytes of the tensor, read into `out`. */
  private async readInto(info: TensorInfo, name: string, out: Uint8Array): Promise<Uint8Array> {
    const handle = await this.handle(info.file, name);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await handle.read(out, done, out.length - done, info.byteOffset + done);
      if (bytesRead === 0) throw new CheckpointError('file ends inside the tensor (truncated since it was opened?): re-download it', info.file, name);
      done += bytesRead;
    }
    return out;
  }

  /**
   * The tensor's values as float32 from F32/BF16/F16/F8_E4M3, without FP8 block scaling (see readLinearWeight);
   * widened by chunks with a loop turn between them (see CHUNK_VALUES). With `into` (as many values as the tensor
   * has), they are written there and `into` is returned: a caller that wants several tensors in one array (a stacked
   * gate and up) reads each into its place instead of copying it there afterwards.
   */
  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const info = this.info(name);
    const { dtype, file } = info;
    if (!isFloatDtype(dtype)) throw new CheckpointError(`dtype ${dtype} cannot be read as float weights (only F32, BF16, F16 and F8_E4M3 can)`, file, name);
    const width = DTYPE_BYTES[dtype];
    if (into && into.length * width !== info.byteLength) throw new RangeError(`readFloat32: ${into.length} values to read "${name}" into, it has ${info.byteLength / width}`);
    // F32: the file's bytes are the values (little-endian), read straight into place; nothing to do by chunks.
    if (dtype === 'F32') {
      if (!into) return bytesToFloat32(dtype, await this.readRaw(name));
      await this.readInto(info, name, new Uint8Array(into.buffer, into.byteOffset, into.byteLength));
      return into;
    }
    const bytes = await this.readRaw(name);
    const out = into ?? new Float32Array(bytes.byteLength / width);
    await byChunks(out.length, CHUNK_VALUES, (i, j) => out.set(bytesToFloat32(dtype, bytes.subarray(i * width, j * width)), i));
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    const handles = [...this.handles.values()];
    this.handles.clear();
    // A handle whose open failed has nothing to close.
    await Promise.all(handles.map((h) => h.then((fh) => fh.close(), () => undefined)));
  }

  /** The cached handle of a file, opened on first use. */
  private handle(file: string, tensor: string | null = null): Promise<FileHandle> {
    if (this.closed) return Promise.reject(new CheckpointError('checkpoint is closed: open it again to read', file, tensor));
    let h = this.handles.get(file);
    if (!h) {
      h = open(file, 'r').catch((cause: unknown) => {
        this.handles.delete(file);
        throw new CheckpointError(`cannot open (${(cause as Error).message})`, file, tensor, { cause });
      });
      this.handles.set(file, h);
    }
    return h;
  }
}
