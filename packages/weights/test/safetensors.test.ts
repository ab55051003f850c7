import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, quantizeBlockFp8, readLinearWeight, SafetensorsCheckpoint, writeSafetensors, writeShardedCheckpoint, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

const f32 = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

const tensors = (): LazyTensor[] => [
  { name: 'a.weight', dtype: 'F32', shape: [2, 3], data: () => f32([1, 2, 3, 4, 5, 6]) },
  { name: 'b.weight', dtype: 'BF16', shape: [2], data: () => Uint8Array.from([0x80, 0x3f, 0x00, 0xc0]) }, // 1, -2
  { name: 'c.weight', dtype: 'F16', shape: [1], data: () => Uint8Array.from([0x00, 0x3c]) }, // 1
  { name: 'd.weight', dtype: 'F8_E4M3', shape: [1, 2], data: () => Uint8Array.from([0x38, 0x40]) }, // 1, 2
  { name: 'd.weight_scale_inv', dtype: 'F32', shape: [1, 1], data: () => f32([0.5]) },
];

async function expectCheckpointError(p: Promise<unknown>, file: RegExp, tensor: string | null, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  const e = err as CheckpointError;
  expect(e.file).toMatch(file);
  expect(e.tensor).toBe(tensor);
  expect(e.message).toMatch(message);
}

describe('safetensors', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('safetensors');
  });
  afterAll(async () => dir?.remove());

  it('writes the reference layout: u64 header length, JSON header padded to 8 bytes, data in order', async () => {
    const path = join(dir.path, 'layout.safetensors');
    await writeSafetensors(path, tensors());
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
    expect(header['a.weight']).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
    expect(header['b.weight']!.data_offsets).toEqual([24, 28]);
    expect(bytes.length).toBe(8 + n + 24 + 4 + 2 + 2 + 4);
  });

  it('reads every dtype back, single file and sharded', async () => {
    for (const shards of [1, 3]) {
      const d = join(dir.path, `rt${shards}`);
      await (await import('node:fs/promises')).mkdir(d, { recursive: true });
      await writeShardedCheckpoint(d, tensors(), shards);
      const ck = await SafetensorsCheckpoint.open(d);
      expect(ck.names().sort()).toEqual(['a.weight', 'b.weight', 'c.weight', 'd.weight', 'd.weight_scale_inv']);
      expect(Array.from(await ck.readFloat32('a.weight'))).toEqual([1, 2, 3, 4, 5, 6]);
      expect(Array.from(await ck.readFloat32('b.weight'))).toEqual([1, -2]);
      expect(Array.from(await ck.readFloat32('c.weight'))).toEqual([1]);
      expect(Array.from(await ck.readFloat32('d.weight'))).toEqual([1, 2]);
      expect(Array.from(await readLinearWeight(ck, 'd.weight', [128, 128]))).toEqual([0.5, 1]);
      expect(ck.info('a.weight').shape).toEqual([2, 3]);
      await ck.close();
    }
  });

  it('reads only the requested byte range', async () => {
    const d = join(dir.path, 'range');
    await (await import('node:fs/promises')).mkdir(d, { recursive: true });
    await writeShardedCheckpoint(d, tensors(), 1);
    const ck = await SafetensorsCheckpoint.open(d);
    const info = ck.info('b.weight');
    // Scribble over every other tensor's bytes: reading b must not notice.
    const h = await open(info.file, 'r+');
    const a = ck.info('a.weight');
    await h.write(Buffer.alloc(a.byteLength, 0xff), 0, a.byteLength, a.byteOffset);
    await h.close();
    expect(Array.from(await ck.readFloat32('b.weight'))).toEqual([1, -2]);
    await ck.close();
  });

  it('dequantises FP8 against an independent quantisation with partial blocks', async () => {
    const d = join(dir.path, 'fp8');
    await (await import('node:fs/promises')).mkdir(d, { recursive: true });
    const w = Float32Array.from({ length: 5 * 7 }, (_, i) => Math.sin(i));
    const { codes, scaleInv } = quantizeBlockFp8(w, 5, 7, 4, 4);
    await writeShardedCheckpoint(
      d,
      [
        { name: 'p.weight', dtype: 'F8_E4M3', shape: [5, 7], data: () => codes },
        { name: 'p.weight_scale_inv', dtype: 'F32', shape: [2, 2], data: () => new Uint8Array(scaleInv.buffer) },
      ],
      1,
    );
    const ck = await SafetensorsCheckpoint.open(d);
    const got = await readLinearWeight(ck, 'p.weight', [4, 4]);
    for (let i = 0; i < w.length; i++) expect(Math.abs(got[i]! - w[i]!)).toBeLessThan(0.07);
    await expectCheckpointError(readLinearWeight(ck, 'p.weight', [2, 2]), /model\.safetensors/, 'p.weight_scale_inv', /needs \[3, 4\]/);
    await ck.close();
  });

  describe('bad files', () => {
    const write = async (name: string, bytes: Uint8Array): Promise<string> => {
      const d = join(dir.path, name);
      await (await import('node:fs/promises')).mkdir(d, { recursive: true });
      await writeFile(join(d, 'model.safetensors'), bytes);
      return d;
    };
    const withHeader = (header: object, dataBytes: number): Uint8Array => {
      const json = Buffer.from(JSON.stringify(header));
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]);
    };

    it('truncated data', async () => {
      const d = await write('trunc', withHeader({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model\.safetensors$/, 'x', /truncated/);
    });

    it('header length beyond the file', async () => {
      const bytes = Buffer.alloc(16);
      bytes.writeBigUInt64LE(1000n);
      const d = await write('hlen', bytes);
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model\.safetensors$/, null, /header length 1000/);
    });

    it('header that is not JSON', async () => {
      const bytes = Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{{{{')]);
      const d = await write('json', bytes);
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model\.safetensors$/, null, /not valid JSON/);
    });

    it('data_offsets that contradict dtype and shape', async () => {
      const d = await write('offsets', withHeader({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, 16));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model\.safetensors$/, 'x', /needs 16/);
    });

    it('unknown dtype', async () => {
      const d = await write('dtype', withHeader({ x: { dtype: 'F7', shape: [1], data_offsets: [0, 1] } }, 1));
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /model\.safetensors$/, 'x', /unknown dtype F7/);
    });

    it('a missing tensor, and a folder that is no checkpoint', async () => {
      const d = await write('ok', withHeader({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4));
      const ck = await SafetensorsCheckpoint.open(d);
      expect(() => ck.info('y')).toThrow(CheckpointError);
      expect(() => ck.info('y')).toThrow(/tensor "y".*not found/);
      await ck.close();
      await expectCheckpointError(SafetensorsCheckpoint.open(join(dir.path, 'nothing-here')), /nothing-here$/, null, /neither model\.safetensors\.index\.json nor model\.safetensors/);
    });

    it('an index that is not JSON', async () => {
      const d = join(dir.path, 'badindex');
      await (await import('node:fs/promises')).mkdir(d, { recursive: true });
      await writeFile(join(d, 'model.safetensors.index.json'), '{"weight_map": ');
      await expectCheckpointError(SafetensorsCheckpoint.open(d), /index\.json$/, null, /not valid JSON/);
    });
  });
});
