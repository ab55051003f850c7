import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BufferedFileWriter } from './buffered-file-writer.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint-files.js';
import { DTYPE_BYTES, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';
import { CheckpointError } from './errors.js';

/** A tensor's bytes (little-endian): whole, or as chunks so a multi-GB tensor never needs one buffer. */
export type TensorBytes = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** A tensor to write whose bytes may be produced only when its turn comes, keeping memory flat. */
export interface LazyTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The bytes, or a function called once, when this tensor is written, that produces them. */
  readonly data: Uint8Array | (() => TensorBytes | Promise<TensorBytes>);
}

/**
 * Tensors to write, in file order. The header lists every tensor before any data, so the
 * descriptors are all collected first; keep `data` lazy and only one tensor's bytes are alive.
 */
export type TensorSource = Iterable<LazyTensor> | AsyncIterable<LazyTensor>;

const byteLength = (t: Pick<LazyTensor, 'dtype' | 'shape'>): number => t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];

async function collect(tensors: TensorSource): Promise<LazyTensor[]> {
  const out: LazyTensor[] = [];
  for await (const t of tensors) out.push(t);
  return out;
}

function validate(path: string, tensors: readonly LazyTensor[]): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name === '') throw new CheckpointError('is not a usable tensor name', path, t.name);
    if (seen.has(t.name)) throw new CheckpointError('is listed twice: tensor names must be unique', path, t.name);
    seen.add(t.name);
    if (!isSafetensorsDtype(t.dtype)) throw new CheckpointError(`has unknown dtype ${String(t.dtype)}`, path, t.name);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new CheckpointError(`has shape [${t.shape.join(', ')}], which is not a list of sizes`, path, t.name);
  }
}

/** The header bytes: JSON padded with spaces to a multiple of 8, as the reference library writes it. */
function encodeHeader(tensors: readonly LazyTensor[], metadata: Readonly<Record<string, string>>): Uint8Array {
  const entries: [string, unknown][] = Object.keys(metadata).length > 0 ? [['__metadata__', metadata]] : [];
  let offset = 0;
  for (const t of tensors) {
    const n = byteLength(t);
    entries.push([t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + n] }]);
    offset += n;
  }
  // fromEntries defines own properties, so even a tensor named "__proto__" survives.
  let json = JSON.stringify(Object.fromEntries(entries));
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const header = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + header.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  return out;
}

async function writeTensorData(out: BufferedFileWriter, path: string, t: LazyTensor): Promise<void> {
  const expected = byteLength(t);
  const start = out.position;
  const bytes = typeof t.data === 'function' ? await t.data() : t.data;
  let tooMany = false;
  if (bytes instanceof Uint8Array) {
    await out.write(bytes);
  } else {
    for await (const chunk of bytes) {
      if (!(chunk instanceof Uint8Array)) throw new CheckpointError('data produced a chunk that is not a Uint8Array', path, t.name);
      // Stop early rather than write gigabytes past the tensor's end.
      if (out.position - start + chunk.length > expected) {
        tooMany = true;
        break;
      }
      await out.write(chunk);
    }
  }
  const got = out.position - start;
  if (got !== expected) {
    throw new CheckpointError(`data gave ${tooMany ? `more than ${expected}` : got} bytes but ${t.dtype}[${t.shape.join(', ')}] needs ${expected}: fix the tensor's data`, path, t.name);
  }
}

/**
 * Writes one safetensors file, tensors in the given order, streaming each tensor's bytes to disk
 * as it is produced. A failed write removes the partial file. Returns the file's size in bytes.
 */
export async function writeSafetensors(path: string, tensors: TensorSource, metadata: Readonly<Record<string, string>> = { format: 'pt' }): Promise<number> {
  const list = await collect(tensors);
  validate(path, list);
  const file = await open(path, 'w');
  try {
    const out = new BufferedFileWriter(file);
    await out.write(encodeHeader(list, metadata));
    for (const t of list) await writeTensorData(out, path, t);
    await out.flush();
    await file.close();
    return out.position;
  } catch (err) {
    await file.close().catch(() => undefined);
    await rm(path, { force: true });
    throw err;
  }
}

/** Hugging Face's shard name, 0-based `i` of `n`: model-00001-of-00003.safetensors. */
export const shardFileName = (i: number, n: number): string => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/**
 * Splits tensors, in order, into `shards` runs of about equal bytes, each run non-empty: a tensor
 * goes where its starting byte falls, but never skips a shard and always leaves one tensor for
 * each shard still to fill.
 */
function assignShards(sizes: readonly number[], shards: number): number[] {
  const total = sizes.reduce((a, b) => a + b, 0);
  const out: number[] = [];
  let acc = 0;
  let prev = -1;
  sizes.forEach((size, i) => {
    const target = total > 0 ? Math.floor((acc / total) * shards) : 0;
    const low = Math.max(prev, shards - (sizes.length - i));
    const g = Math.min(prev + 1, Math.max(low, target));
    out.push(g);
    prev = g;
    acc += size;
  });
  return out;
}

/**
 * Writes a checkpoint the way Hugging Face shards one: `model.safetensors` alone (shards = 1), or
 * `model-0000i-of-0000N.safetensors` files of about equal size plus `model.safetensors.index.json`
 * ({metadata: {total_size}, weight_map}). N is capped at the number of tensors so no shard is
 * empty. The folder is created if needed; a stale index is removed when writing a single file, as
 * readers would otherwise still follow it.
 */
export async function writeShardedCheckpoint(
  dir: string,
  tensors: TensorSource,
  shards: number,
  metadata: Readonly<Record<string, string>> = { format: 'pt' },
): Promise<{ files: string[]; totalBytes: number }> {
  if (!Number.isSafeInteger(shards) || shards < 1) throw new RangeError(`shards must be a positive integer, got ${shards}`);
  const list = await collect(tensors);
  validate(dir, list);
  await mkdir(dir, { recursive: true });
  const n = Math.max(1, Math.min(shards, list.length));
  if (n === 1) {
    await rm(join(dir, INDEX_FILE), { force: true });
    return { files: [SINGLE_FILE], totalBytes: await writeSafetensors(join(dir, SINGLE_FILE), list, metadata) };
  }
  const sizes = list.map(byteLength);
  const shardOf = assignShards(sizes, n);
  const files: string[] = [];
  const weightMap: [string, string][] = [];
  let totalBytes = 0;
  for (let s = 0; s < n; s++) {
    const name = shardFileName(s, n);
    const group = list.filter((_, i) => shardOf[i] === s);
    totalBytes += await writeSafetensors(join(dir, name), group, metadata);
    files.push(name);
    for (const t of group) weightMap.push([t.name, name]);
  }
  // Like transformers' save_pretrained: total_size counts tensor bytes only; keys sorted, 2-space indent.
  weightMap.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const index = { metadata: { total_size: sizes.reduce((a, b) => a + b, 0) }, weight_map: Object.fromEntries(weightMap) };
  await writeFile(join(dir, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`);
  files.push(INDEX_FILE);
  return { files, totalBytes };
}
