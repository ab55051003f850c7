import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CheckpointError } from './errors.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export interface CheckpointFiles {
  readonly dir: string;
  /** The file that defines the checkpoint: the index, or the single .safetensors file. */
  readonly source: string;
  /** Paths of the .safetensors files, in index order. */
  readonly files: readonly string[];
  /** Tensor name → shard path from the index; null without an index. */
  readonly weightMap: ReadonlyMap<string, string> | null;
}

/**
 * Finds the files of a checkpoint given a .safetensors file or a folder holding either
 * model.safetensors.index.json (sharded) or model.safetensors, and checks every shard exists.
 */
export async function resolveCheckpointFiles(path: string): Promise<CheckpointFiles> {
  const kind = await pathKind(path);
  if (kind === 'missing') throw new CheckpointError('does not exist: pass a .safetensors file or a Hugging Face checkpoint folder', path);
  if (kind === 'file') return { dir: dirname(path), source: path, files: [path], weightMap: null };
  const indexPath = join(path, INDEX_FILE);
  if ((await pathKind(indexPath)) === 'file') return readIndex(path, indexPath);
  const single = join(path, SINGLE_FILE);
  if ((await pathKind(single)) === 'file') return { dir: path, source: single, files: [single], weightMap: null };
  throw new CheckpointError(`neither ${INDEX_FILE} nor ${SINGLE_FILE} found: point --model at a Hugging Face checkpoint folder`, path);
}

async function readIndex(dir: string, indexPath: string): Promise<CheckpointFiles> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (cause) {
    throw new CheckpointError(`is not valid JSON (${(cause as Error).message}): re-download it`, indexPath, null, { cause });
  }
  const raw = typeof index === 'object' && index !== null ? (index as { weight_map?: unknown }).weight_map : undefined;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckpointError('has no "weight_map" object: re-download it', indexPath);
  const weightMap = new Map<string, string>();
  for (const [tensor, file] of Object.entries(raw)) {
    if (typeof file !== 'string' || file === '') throw new CheckpointError(`"weight_map" value ${JSON.stringify(file)} is not a file name`, indexPath, tensor);
    weightMap.set(tensor, join(dir, file));
  }
  const files = [...new Set(weightMap.values())];
  for (const file of files) {
    if ((await pathKind(file)) !== 'file') {
      const tensor = [...weightMap].find(([, f]) => f === file)![0];
      throw new CheckpointError(`shard file listed in ${INDEX_FILE} is missing: the download is incomplete, fetch this file again`, file, tensor);
    }
  }
  return { dir, source: indexPath, files, weightMap };
}

async function pathKind(path: string): Promise<'file' | 'dir' | 'missing'> {
  try {
    const s = await stat(path);
    return s.isDirectory() ? 'dir' : 'file';
  } catch {
    return 'missing';
  }
}
