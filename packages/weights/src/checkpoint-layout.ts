import { open, stat, type FileHandle } from 'node:fs/promises';
import { relative } from 'node:path';
import { CheckpointError } from './errors.js';
import { resolveCheckpointFiles } from './checkpoint-files.js';
import { readSafetensorsHeader, type SafetensorsHeader, type TensorInfo } from './safetensors-header.js';

/** A file's size and modification time when it was read: if either differs later, the file changed. */
interface FileStamp {
  readonly size: number;
  readonly mtimeMs: number;
}

/**
 * What a checkpoint's index and safetensors headers say, validated: every tensor with its file and
 * byte range, and the files' `__metadata__`. Parsing it costs a JSON parse of every header (13–15 ms
 * for the demo checkpoint, more for the real 671B's 163 files), so a process that opens the same
 * checkpoint again keeps it (CheckpointLayouts) rather than parsing it again.
 */
export interface CheckpointLayout {
  /** The checkpoint's folder. */
  readonly dir: string;
  /** The index file, or the single .safetensors file: named in errors about the whole checkpoint. */
  readonly source: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  /** The path asked for, the index and every .safetensors file, as they were when read. */
  readonly stamps: ReadonlyMap<string, FileStamp>;
}

/** Reads one file's header through an open handle (readSafetensorsHeader; injectable to count reads in tests). */
export type HeaderReader = (handle: FileHandle, path: string) => Promise<SafetensorsHeader>;

/** Reads and validates a checkpoint's index and every header (see SafetensorsCheckpoint.open for what `path` may be). */
export async function readCheckpointLayout(path: string, readHeader: HeaderReader = readSafetensorsHeader): Promise<CheckpointLayout> {
  const { dir, source, files, weightMap } = await resolveCheckpointFiles(path);
  const stamps = new Map<string, FileStamp>();
  // Stamped before reading, so that a file changed while it is read is read again next time.
  for (const p of new Set([path, source])) stamps.set(p, await stampOf(p));
  const tensors = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  for (const file of files) {
    const header = await readHeaderOf(file, readHeader, stamps);
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
  return { dir, source, tensors, metadata, stamps };
}

async function readHeaderOf(file: string, readHeader: HeaderReader, stamps: Map<string, FileStamp>): Promise<SafetensorsHeader> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (cause) {
    throw new CheckpointError(`cannot open (${(cause as Error).message})`, file, null, { cause });
  }
  try {
    const s = await handle.stat();
    stamps.set(file, { size: s.size, mtimeMs: s.mtimeMs });
    return await readHeader(handle, file);
  } finally {
    await handle.close();
  }
}

async function stampOf(path: string): Promise<FileStamp> {
  const s = await stat(path);
  return { size: s.size, mtimeMs: s.mtimeMs };
}

/** Whether every file the layout was read from still has its size and modification time (a missing one has not). */
async function unchanged(layout: CheckpointLayout): Promise<boolean> {
  const now = await Promise.all([...layout.stamps].map(([path, was]) => stampOf(path).then((s) => s.size === was.size && s.mtimeMs === was.mtimeMs, () => false)));
  return now.every(Boolean);
}

/**
 * The layouts of the checkpoints a process opens, each read once and reused while its files keep
 * their size and modification time (a stat per file, instead of a read and parse of every header:
 * a shard switching plans opens its checkpoint once per load on the thread that serves calls).
 * A changed, replaced or removed file is read again in full, so its errors are those of a first open.
 */
export class CheckpointLayouts {
  private readonly layouts = new Map<string, CheckpointLayout>();

  constructor(private readonly readHeader: HeaderReader = readSafetensorsHeader) {}

  async get(path: string): Promise<CheckpointLayout> {
    const known = this.layouts.get(path);
    if (known && (await unchanged(known))) return known;
    this.layouts.delete(path);
    const layout = await readCheckpointLayout(path, this.readHeader);
    this.layouts.set(path, layout);
    return layout;
  }
}
