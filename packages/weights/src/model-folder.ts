import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from './errors.js';
import { SafetensorsCheckpoint } from './safetensors-reader.js';

/** Throws a CheckpointError saying so when `dir` does not exist or is not a folder: "missing" is said as missing. */
export async function requireModelDir(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new CheckpointError('does not exist: --model must name a checkpoint folder (config.json, safetensors, tokenizer files)', dir);
  }
  if (!isDir) throw new CheckpointError('is not a folder: --model must name a checkpoint folder', dir);
}

/** What a folder holds: nothing of a checkpoint, a complete one, or the pieces of one that is not complete (and why). */
export type CheckpointState = { readonly kind: 'none' } | { readonly kind: 'complete' } | { readonly kind: 'incomplete'; readonly reason: string };

const CHECKPOINT_MARKERS = ['config.json', 'model.safetensors', 'model.safetensors.index.json'];

/**
 * Whether `dir` holds a complete checkpoint: config.json is JSON, and every safetensors file the
 * index names exists with its whole data (headers checked against file sizes). A folder with any of
 * its files but not all of them, e.g. an interrupted download, is `incomplete`.
 */
export async function checkpointState(dir: string): Promise<CheckpointState> {
  const present = await Promise.all(CHECKPOINT_MARKERS.map((f) => stat(join(dir, f)).then(() => true, () => false)));
  if (!present.some(Boolean)) return { kind: 'none' };
  try {
    JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  } catch (e) {
    return { kind: 'incomplete', reason: `config.json: ${(e as Error).message}` };
  }
  try {
    await (await SafetensorsCheckpoint.open(dir)).close();
  } catch (e) {
    return { kind: 'incomplete', reason: (e as Error).message };
  }
  return { kind: 'complete' };
}
