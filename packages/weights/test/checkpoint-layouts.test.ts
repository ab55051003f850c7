import { readFile, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointLayouts, readSafetensorsHeader, SafetensorsCheckpoint, writeShardedCheckpoint, type HeaderReader, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

const f32 = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);
const tensors = (scale = 1): LazyTensor[] => [
  { name: 'a.weight', dtype: 'F32', shape: [2, 3], data: f32([1, 2, 3, 4, 5, 6].map((v) => v * scale)) },
  { name: 'b.weight', dtype: 'F32', shape: [2], data: f32([7, 8].map((v) => v * scale)) },
  { name: 'c.weight', dtype: 'F32', shape: [1], data: f32([9 * scale]) },
];

/** The files whose header was read, in order: the real reader, counted. */
function countingReader(): { read: HeaderReader; files: string[] } {
  const files: string[] = [];
  return { files, read: (handle, path) => (files.push(path), readSafetensorsHeader(handle, path)) };
}

/** Moves a file's modification time forward, as a rewrite within the same millisecond might not. */
const touch = async (path: string, secondsLater: number): Promise<void> => {
  const t = Date.now() / 1000 + secondsLater;
  await utimes(path, t, t);
};

describe('CheckpointLayouts: a checkpoint opened again is not parsed again', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let n = 0;
  const fresh = async (shards: number): Promise<string> => {
    const d = join(dir.path, `c${n++}`);
    await writeShardedCheckpoint(d, tensors(), shards);
    return d;
  };
  beforeAll(async () => {
    dir = await tempDir('st-layouts');
  });
  afterAll(async () => dir?.remove());

  it('reads every header once; later opens read none and give the same tensors, metadata and bytes', async () => {
    for (const shards of [1, 3]) {
      const d = await fresh(shards);
      const counted = countingReader();
      const layouts = new CheckpointLayouts(counted.read);
      const first = await SafetensorsCheckpoint.open(d, layouts);
      expect(counted.files).toHaveLength(shards);
      const firstBytes = await first.readRaw('a.weight');
      await first.close();
      for (let i = 0; i < 3; i++) {
        const again = await SafetensorsCheckpoint.open(d, layouts);
        expect(again.names().sort()).toEqual(['a.weight', 'b.weight', 'c.weight']);
        expect(again.info('b.weight')).toEqual(first.info('b.weight'));
        expect(again.metadata()).toEqual({ format: 'pt' });
        expect(Array.from(await again.readRaw('a.weight'))).toEqual(Array.from(firstBytes));
        expect(Array.from(await again.readFloat32('c.weight'))).toEqual([9]);
        await again.close();
      }
      expect(counted.files).toHaveLength(shards);
    }
  });

  it('without layouts, every open reads every header (as before)', async () => {
    const d = await fresh(2);
    const counted = countingReader();
    // Each CheckpointLayouts is its own cache: two of them read twice.
    await (await SafetensorsCheckpoint.open(d, new CheckpointLayouts(counted.read))).close();
    await (await SafetensorsCheckpoint.open(d, new CheckpointLayouts(counted.read))).close();
    expect(counted.files).toHaveLength(4);
  });

  it('a shard file rewritten since (other data, or a new mtime) is read again, and only then', async () => {
    const d = await fresh(3);
    const counted = countingReader();
    const layouts = new CheckpointLayouts(counted.read);
    await (await SafetensorsCheckpoint.open(d, layouts)).close();
    // Rewrite the whole checkpoint with other values: same names, shapes and sizes.
    await writeShardedCheckpoint(d, tensors(10), 3);
    for (const f of ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json']) await touch(join(d, f), 5);
    const ck = await SafetensorsCheckpoint.open(d, layouts);
    expect(counted.files).toHaveLength(6);
    expect(Array.from(await ck.readFloat32('c.weight'))).toEqual([90]);
    await ck.close();
    await (await SafetensorsCheckpoint.open(d, layouts)).close();
    expect(counted.files).toHaveLength(6);
    // Only a newer mtime on one file: every header is read again (the layout is the checkpoint's, whole).
    await touch(join(d, 'model-00002-of-00003.safetensors'), 10);
    await (await SafetensorsCheckpoint.open(d, layouts)).close();
    expect(counted.files).toHaveLength(9);
  });

  it('a checkpoint corrupted or removed after its first open gives the clear error of a first open', async () => {
    const d = await fresh(1);
    const file = join(d, 'model.safetensors');
    const layouts = new CheckpointLayouts();
    await (await SafetensorsCheckpoint.open(d, layouts)).close();
    // Truncated inside a tensor.
    const bytes = await readFile(file);
    await truncate(file, bytes.length - 4);
    await expectCheckpointError(SafetensorsCheckpoint.open(d, layouts), /model\.safetensors$/, 'c.weight', /truncated\): re-download/);
    // Header no longer JSON, same size as before.
    const broken = Buffer.from(bytes);
    broken.write('#', 8);
    await writeFile(file, broken);
    await touch(file, 5);
    await expectCheckpointError(SafetensorsCheckpoint.open(d, layouts), /model\.safetensors$/, null, /header is not valid JSON/);
    // Restored: opens again, with its values.
    await writeFile(file, bytes);
    await touch(file, 10);
    const ck = await SafetensorsCheckpoint.open(d, layouts);
    expect(Array.from(await ck.readFloat32('b.weight'))).toEqual([7, 8]);
    await ck.close();
    // Removed.
    await rm(file);
    await expectCheckpointError(SafetensorsCheckpoint.open(d, layouts), new RegExp(d.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), null, /neither model\.safetensors\.index\.json nor model\.safetensors found/);
  });

  it('a shard file listed in the index and removed after the first open is named as missing', async () => {
    const d = await fresh(3);
    const layouts = new CheckpointLayouts();
    await (await SafetensorsCheckpoint.open(d, layouts)).close();
    await rm(join(d, 'model-00002-of-00003.safetensors'));
    await expectCheckpointError(SafetensorsCheckpoint.open(d, layouts), /model-00002-of-00003\.safetensors$/, 'b.weight', /missing: the download is incomplete/);
  });
});
