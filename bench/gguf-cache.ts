/**
 * Where the llama.cpp benchmark keeps its GGUF files, keyed on what they are made from: the checkpoint (its
 * config.json bytes and each file's name, size and modification time), the converter (a hash of its sources,
 * bench/gguf-*.ts) and the output type. A changed checkpoint or converter gives another name, so a stale file
 * is never reused (a cache checked by modification time alone missed a changed converter).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { processAlive } from '@expertmesh/process-lifecycle';

/** The converter's own sources: every bench/gguf-*.ts file. */
export const CONVERTER_SOURCE_PATTERN = /^gguf-.*\.ts$/;

const sha256 = (parts: readonly (string | Uint8Array)[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
};

/** The checkpoint as it is on disk: config.json's bytes, and every file's name, size and modification time (ns). */
export async function checkpointIdentity(modelDir: string): Promise<string> {
  const names = (await readdir(modelDir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort();
  const parts: (string | Uint8Array)[] = [await readFile(join(modelDir, 'config.json'))];
  for (const name of names) {
    const s = await stat(join(modelDir, name), { bigint: true });
    parts.push(`${name} ${s.size} ${s.mtimeNs}`);
  }
  return sha256(parts);
}

/** A hash of the converter's sources (the gguf-*.ts files of `dir`, by name and content). */
export async function converterVersion(dir: string = import.meta.dirname): Promise<string> {
  const names = (await readdir(dir)).filter((n) => CONVERTER_SOURCE_PATTERN.test(n)).sort();
  if (names.length === 0) throw new Error(`no converter sources (gguf-*.ts) in ${dir}`);
  const parts: (string | Uint8Array)[] = [];
  for (const name of names) parts.push(name, await readFile(join(dir, name)));
  return sha256(parts);
}

export interface GgufCacheKeyParts {
  readonly checkpoint: string;
  readonly converter: string;
  readonly format: string;
}

/** 16 hex digits naming one (checkpoint, converter, output type). */
export function ggufCacheKey(parts: GgufCacheKeyParts): string {
  return sha256([parts.checkpoint, parts.converter, parts.format]).slice(0, 16);
}

/** The cache file for one model and format: `<model folder name>-<format>-<key>.gguf` under `cacheDir`. */
export function ggufCachePath(cacheDir: string, modelDir: string, format: string, key: string): string {
  return join(cacheDir, `${basename(resolve(modelDir))}-${format}-${key}.gguf`);
}

/**
 * Removes this model's and format's other GGUF files from the cache (older keys, the unkeyed names earlier
 * versions wrote, partial files of conversions that died, not those of one still running): each is gigabytes,
 * and none can be used again. Returns the paths removed.
 */
export async function removeStaleGguf(cacheDir: string, current: string): Promise<string[]> {
  const m = /^(.*)-([A-Za-z0-9_]+)-[0-9a-f]{16}\.gguf$/.exec(basename(current));
  if (!m) throw new Error(`${current} is not a cache path`);
  const [, model, format] = m as unknown as [string, string, string];
  const ours = new RegExp(`^${model.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-${format}(-[0-9a-f]{16})?\\.gguf(\\.partial-\\d+)?$`);
  const removed: string[] = [];
  for (const name of await readdir(cacheDir)) {
    const path = join(cacheDir, name);
    const match = ours.exec(name);
    if (path === current || !match || (match[2] && processAlive(Number(match[2].slice('.partial-'.length))))) continue;
    await rm(path, { force: true });
    removed.push(path);
  }
  return removed;
}

/** Where this process writes a GGUF before renaming it to `path` (a conversion cut short never looks finished). */
export function partialPath(path: string): string {
  return `${path}.partial-${process.pid}`;
}
