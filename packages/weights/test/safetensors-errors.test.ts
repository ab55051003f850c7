import { mkdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, SafetensorsCheckpoint, writeShardedCheckpoint, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

/** A safetensors file from a raw header (any JSON text) and `dataBytes` zero bytes of data. */
const rawFile = (headerText: string, dataBytes: number): Buffer => {
  const json = Buffer.from(headerText);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]);
};
const withHeader = (header: object, dataBytes: number): Buffer => rawFile(JSON.stringify(header), dataBytes);

const FILE = /model\.safetensors$/;

describe('bad checkpoints fail at open with errors naming the file and the tensor', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let n = 0;
  beforeAll(async () => {
    dir = await tempDir('st-errors');
  });
  afterAll(async () => dir?.remove());

  /** A fresh folder holding `bytes` as model.safetensors. */
  const folderWith = async (bytes: Uint8Array): Promise<string> => {
    const d = join(dir.path, `c${n++}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'model.safetensors'), bytes);
    return d;
  };
  const sharded = async (): Promise<string> => {
    const d = join(dir.path, `s${n++}`);
    const t = (name: string): LazyTensor => ({ name, dtype: 'F32', shape: [2], data: new Uint8Array(8) });
    await writeShardedCheckpoint(d, [t('x.weight'), t('y.weight'), t('z.weight')], 3);
    return d;
  };

  describe('data section', () => {
    it('a file truncated inside a tensor names that tensor', async () => {
      const d = await folderWith(withHeader({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), FILE, 'x', /truncated\): re-download/);
    });

    it('a file truncated inside the header', async () => {
      const bytes = withHeader({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4);
      const d = await folderWith(bytes.subarray(0, 20));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), FILE, null, /header length \d+ does not fit in the file of 20 bytes/);
    });

    it('a file shorter than the length prefix', async () => {
      const d = await folderWith(Uint8Array.of(1, 2, 3));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), FILE, null, /3 bytes, too short/);
    });

    it('a header length larger than the file', async () => {
      const bytes = Buffer.alloc(16);
      bytes.writeBigUInt64LE(1000n);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(bytes)), FILE, null, /header length 1000 does not fit/);
      bytes.writeBigUInt64LE(2n ** 63n);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(bytes)), FILE, null, /header length \d+ does not fit/);
    });

    it('a file truncated after it was opened fails the read, naming the tensor', async () => {
      const d = await folderWith(withHeader({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 16));
      const ck = await SafetensorsCheckpoint.open(d);
      await truncate(join(d, 'model.safetensors'), (await readFile(join(d, 'model.safetensors'))).length - 4);
      await expectCheckpointError(ck.readRaw('x'), FILE, 'x', /file ends inside the tensor/);
      await ck.close();
    });
  });

  describe('header', () => {
    it('not JSON', async () => {
      const d = await folderWith(rawFile('{"x": {"dtype": "F32", ', 0));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), FILE, null, /header is not valid JSON/);
    });

    it('JSON but not an object', async () => {
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(rawFile('[1, 2]', 0))), FILE, null, /not a JSON object/);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(rawFile('null', 0))), FILE, null, /not a JSON object/);
    });

    it('an entry that is not an object, or has an unknown dtype or a bad shape', async () => {
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(withHeader({ x: 5 }, 0))), FILE, 'x', /not an object/);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(withHeader({ x: { dtype: 'F7', shape: [1], data_offsets: [0, 1] } }, 1))), FILE, 'x', /unknown dtype F7/);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(withHeader({ x: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4))), FILE, 'x', /shape \[1\.5\] is not a list of sizes/);
      await expectCheckpointError(SafetensorsCheckpoint.open(await folderWith(withHeader({ x: { dtype: 'F32', shape: 4, data_offsets: [0, 16] } }, 16))), FILE, 'x', /not a list of sizes/);
    });

    it('bad data_offsets: not a pair, reversed, inconsistent with dtype × shape, past the data, overlapping', async () => {
      const open = (header: object, data: number): Promise<SafetensorsCheckpoint> => folderWith(withHeader(header, data)).then((d) => SafetensorsCheckpoint.open(d));
      await expectCheckpointError(open({ x: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), FILE, 'x', /data_offsets \[0\] is not \[begin, end\]/);
      await expectCheckpointError(open({ x: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 8), FILE, 'x', /is not \[begin, end\]/);
      await expectCheckpointError(open({ x: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 8), FILE, 'x', /is not \[begin, end\]/);
      await expectCheckpointError(open({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, 16), FILE, 'x', /span 12 bytes but F32\[4\] needs 16/);
      await expectCheckpointError(open({ x: { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 24] } }, 24), FILE, 'x', /BF16\[2, 3\] needs 12/);
      await expectCheckpointError(open({ x: { dtype: 'F32', shape: [1], data_offsets: [100, 104] } }, 8), FILE, 'x', /ends at byte \d+ but the file has \d+/);
      await expectCheckpointError(
        open({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12),
        FILE,
        'y',
        /overlap those of "x"/,
      );
    });

    it('__metadata__ that is not an object of strings', async () => {
      const d = await folderWith(withHeader({ __metadata__: { format: 1 }, x: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 1));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), FILE, null, /"__metadata__" is not an object of strings/);
    });
  });

  describe('index and folder', () => {
    it('an index naming a missing shard names the file and a tensor it should hold', async () => {
      const d = await sharded();
      await rm(join(d, 'model-00002-of-00003.safetensors'));
      const e = await expectCheckpointError(SafetensorsCheckpoint.open(d), /model-00002-of-00003\.safetensors$/, 'y.weight', /is missing: the download is incomplete/);
      expect(e.message).toContain('model.safetensors.index.json');
    });

    it('an index placing a tensor in a shard that lacks it', async () => {
      const d = await sharded();
      const indexPath = join(d, 'model.safetensors.index.json');
      const index = JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map: Record<string, string> };
      index.weight_map['z.weight'] = 'model-00001-of-00003.safetensors';
      await writeFile(indexPath, JSON.stringify(index));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model-00001-of-00003\.safetensors$/, 'z.weight', /places this tensor in model-00001-of-00003\.safetensors but that file's header does not hold it/);
    });

    it('the same tensor in two shards', async () => {
      const d = await sharded();
      await writeFile(join(d, 'model-00003-of-00003.safetensors'), withHeader({ 'x.weight': { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 8));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model-00003-of-00003\.safetensors$/, 'x.weight', /also in .*model-00001-of-00003\.safetensors/);
    });

    it('an index that is not JSON or has no weight_map', async () => {
      const d = await sharded();
      const indexPath = join(d, 'model.safetensors.index.json');
      await writeFile(indexPath, '{"weight_map": ');
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /index\.json$/, null, /is not valid JSON/);
      await writeFile(indexPath, '{"metadata": {}}');
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /index\.json$/, null, /no "weight_map" object/);
      await writeFile(indexPath, '{"weight_map": {"x.weight": 3}}');
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /index\.json$/, 'x.weight', /not a file name/);
    });

    it('a tensor that does not exist names the checkpoint file and the tensor', async () => {
      const single = await folderWith(withHeader({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4));
      const ck = await SafetensorsCheckpoint.open(single);
      await expectCheckpointError(() => ck.info('y'), FILE, 'y', /not found in the checkpoint; is it the right model or a complete download\?/);
      await expectCheckpointError(ck.readRaw('y'), FILE, 'y', /not found/);
      await expectCheckpointError(ck.readFloat32('y'), FILE, 'y', /not found/);
      await ck.close();
      const ck2 = await SafetensorsCheckpoint.open(await sharded());
      await expectCheckpointError(() => ck2.info('w.weight'), /model\.safetensors\.index\.json$/, 'w.weight', /not found/);
      await ck2.close();
    });

    it('a path that does not exist, and a folder that is no checkpoint', async () => {
      await expectCheckpointError(SafetensorsCheckpoint.open(join(dir.path, 'nowhere')), /nowhere$/, null, /does not exist/);
      const empty = join(dir.path, 'empty');
      await mkdir(empty);
      await expectCheckpointError(SafetensorsCheckpoint.open(empty), /empty$/, null, /neither model\.safetensors\.index\.json nor model\.safetensors/);
    });

    it('errors are CheckpointError with the file and tensor as fields', async () => {
      const d = await folderWith(withHeader({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8));
      const err = await SafetensorsCheckpoint.open(d).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err).toBeInstanceOf(Error);
      expect((err as CheckpointError).name).toBe('CheckpointError');
      expect((err as CheckpointError).message).toMatch(/^\/.*model\.safetensors \(tensor "x"\): /);
    });
  });
});
