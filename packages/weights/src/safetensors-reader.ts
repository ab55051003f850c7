import { open, type FileHandle } from 'node:fs/promises';
import { relative } from 'node:path';
import { bytesToFloat32, isFloatDtype } from './dtypes.js';
import { CheckpointError } from './errors.js';
import { resolveCheckpointFiles } from './checkpoint-files.js';
import { readSafetensorsHeader, type TensorInfo } from './safetensors-header.js';

/**
 * Reads tensors from a Hugging Face safetensors checkpoint (one file, or shards listed by
 * model.safetensors.index.json) by byte range: only the headers are parsed up front, and each
 * tensor is read from its file when asked, so a 671B checkpoint costs no memory until used.
 * File handles stay open (one per shard) until close().
 */
export class SafetensorsCheckpoint {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private closed = false;

  private constructor(
    /** The checkpoint's folder. */
    readonly dir: string,
    /** The index file, or the single .safetensors file: named in errors about the whole checkpoint. */
    readonly source: string,
    private readonly tensors: ReadonlyMap<string, TensorInfo>,
    private readonly meta: Readonly<Record<string, string>>,
  ) {}

  /** Opens a checkpoint folder (index or single file) or one .safetensors file, validating every header. */
  static async open(path: string): Promise<SafetensorsCheckpoint> {
    const { dir, source, files, weightMap } = await resolveCheckpointFiles(path);
    const tensors = new Map<string, TensorInfo>();
    const metadata: Record<string, string> = {};
    const checkpoint = new SafetensorsCheckpoint(dir, source, tensors, metadata);
    try {
      for (const file of files) {
        const header = await readSafetensorsHeader(await checkpoint.handle(file), file);
        Object.assign(metadata, header.metadata);
        for (const info of header.tensors) {
          const earlier = tensors.get(info.name);
          if (earlier) throw new CheckpointError(`tensor is also in ${earlier.file}: the shards are from different downloads`, file, info.name);
          tensors.set(info.name, info);
        }
      }
      // The index and the headers must agree, or the download is mixed up.
      for (const [name, file] of weightMap ?? []) {
        if (tensors.get(name)?.file !== file) {
          throw new CheckpointError(`the index places this tensor in ${relative(dir, file)} but that file's header does not hold it: re-download the checkpoint`, file, name);
        }
      }
    } catch (err) {
      await checkpoint.close();
      throw err;
    }
    return checkpoint;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The union of the files' `__metadata__` (e.g. {format: 'pt'}). */
  metadata(): Readonly<Record<string, string>> {
    return this.meta;
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError('tensor not found in the checkpoint; is it the right model or a complete download?', this.source, name);
    return info;
  }

  /**
   * The tensor's bytes exactly as stored (little-endian), read from its byte range only; with
   * `maxBytes`, only its first `maxBytes` bytes (a sample of a tensor of gigabytes costs no more).
   */
  async readRaw(name: string, maxBytes = Infinity): Promise<Uint8Array> {
    const info = this.info(name);
    const handle = await this.handle(info.file, name);
    const out = new Uint8Array(Math.min(info.byteLength, Math.max(0, maxBytes)));
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await handle.read(out, done, out.length - done, info.byteOffset + done);
      if (bytesRead === 0) throw new CheckpointError('file ends inside the tensor (truncated since it was opened?): re-download it', info.file, name);
      done += bytesRead;
    }
    return out;
  }

  /** The tensor's values as float32 from F32/BF16/F16/F8_E4M3, without FP8 block scaling (see readLinearWeight). */
  async readFloat32(name: string): Promise<Float32Array> {
    const { dtype, file } = this.info(name);
    if (!isFloatDtype(dtype)) throw new CheckpointError(`dtype ${dtype} cannot be read as float weights (only F32, BF16, F16 and F8_E4M3 can)`, file, name);
    return bytesToFloat32(dtype, await this.readRaw(name));
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
