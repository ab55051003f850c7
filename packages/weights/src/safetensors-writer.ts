import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DTYPE_BYTES, type SafetensorsDtype } from './dtypes.js';
import { INDEX_FILE, SINGLE_FILE } from './safetensors-reader.js';

/** A tensor to write whose bytes are produced only when its turn comes, keeping memory flat. */
export interface LazyTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly data: () => Uint8Array;
}

const byteLength = (t: Pick<LazyTensor, 'dtype' | 'shape'>): number => t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];

/** Writes one safetensors file; the header is padded with spaces to 8 bytes as the reference library does. */
export async function writeSafetensors(path: string, tensors: readonly LazyTensor[], metadata: Record<string, string> = { format: 'pt' }): Promise<number> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = byteLength(t);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  const file = await open(path, 'w');
  try {
    await file.write(prefix);
    await file.write(headerBytes);
    for (const t of tensors) {
      const bytes = t.data();
      if (bytes.byteLength !== byteLength(t)) throw new RangeError(`tensor ${t.name}: ${bytes.byteLength} bytes for ${t.dtype}[${t.shape.join(', ')}]`);
      await file.write(bytes);
    }
  } finally {
    await file.close();
  }
  return 8 + headerBytes.length + offset;
}

export const shardFileName = (i: number, n: number): string => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/**
 * Writes a checkpoint the way Hugging Face shards one: `model.safetensors` alone, or
 * `model-0000i-of-0000N.safetensors` files of about equal size plus `model.safetensors.index.json`.
 */
export async function writeShardedCheckpoint(dir: string, tensors: readonly LazyTensor[], shards: number): Promise<{ files: string[]; totalBytes: number }> {
  if (shards <= 1) {
    const totalBytes = await writeSafetensors(join(dir, SINGLE_FILE), tensors);
    return { files: [SINGLE_FILE], totalBytes };
  }
  const total = tensors.reduce((a, t) => a + byteLength(t), 0);
  const groups: LazyTensor[][] = Array.from({ length: shards }, () => []);
  let acc = 0;
  for (const t of tensors) {
    const g = Math.min(shards - 1, Math.floor((acc / total) * shards));
    groups[g]!.push(t);
    acc += byteLength(t);
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let totalBytes = 0;
  for (let i = 0; i < shards; i++) {
    const name = shardFileName(i, shards);
    totalBytes += await writeSafetensors(join(dir, name), groups[i]!);
    files.push(name);
    for (const t of groups[i]!) weightMap[t.name] = name;
  }
  await writeFile(join(dir, INDEX_FILE), `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
  files.push(INDEX_FILE);
  return { files, totalBytes };
}
