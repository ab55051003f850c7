import type { FileHandle } from 'node:fs/promises';

/** Small pieces are gathered up to this size before a write; larger ones go straight to disk. */
const BUFFER_BYTES = 4 << 20;
/** Bounds one write call, well below the ~2 GiB a single write(2) accepts. */
const MAX_WRITE_BYTES = 256 << 20;

/**
 * Sequential writes to a file handle with bounded memory: many small tensors cost few syscalls,
 * and a huge tensor is written in slices without being copied.
 */
export class BufferedFileWriter {
  private readonly buffer = new Uint8Array(BUFFER_BYTES);
  private used = 0;
  private written = 0;

  constructor(private readonly file: FileHandle) {}

  /** Bytes accepted so far (buffered or on disk). */
  get position(): number {
    return this.written + this.used;
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.length <= BUFFER_BYTES - this.used) {
      this.buffer.set(bytes, this.used);
      this.used += bytes.length;
      return;
    }
    await this.flush();
    if (bytes.length < BUFFER_BYTES) {
      this.buffer.set(bytes);
      this.used = bytes.length;
    } else {
      await this.writeThrough(bytes);
    }
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    await this.writeThrough(this.buffer.subarray(0, n));
  }

  private async writeThrough(bytes: Uint8Array): Promise<void> {
    // A write may be partial; keep going until every byte is down.
    for (let off = 0; off < bytes.length; ) {
      const { bytesWritten } = await this.file.write(bytes, off, Math.min(bytes.length - off, MAX_WRITE_BYTES));
      off += bytesWritten;
      this.written += bytesWritten;
    }
  }
}
