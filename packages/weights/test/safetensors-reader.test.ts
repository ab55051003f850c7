import { mkdir, open, readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { float32ToBf16Bytes, readLinearWeight, SafetensorsCheckpoint, writeShardedCheckpoint, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

const f32 = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

const tensors = (): LazyTensor[] => [
  { name: 'a.weight', dtype: 'F32', shape: [2, 3], data: f32([1, 2, 3, 4, 5, 6]) },
  { name: 'b.weight', dtype: 'BF16', shape: [2], data: Uint8Array.of(0x80, 0x3f, 0x00, 0xc0) }, // 1, -2
  { name: 'c.weight', dtype: 'F16', shape: [1], data: Uint8Array.of(0x00, 0x3c) }, // 1
  { name: 'd.weight', dtype: 'F8_E4M3', shape: [1, 2], data: Uint8Array.of(0x38, 0x40) }, // 1, 2
  { name: 'd.weight_scale_inv', dtype: 'F32', shape: [1, 1], data: f32([0.5]) },
  { name: 'e.ids', dtype: 'I64', shape: [1], data: new Uint8Array(8) },
];

/** Open file descriptors of this process (Linux), to see handles being cached and closed. */
const openFds = async (): Promise<number> => (await readdir('/proc/self/fd')).length;

describe('SafetensorsCheckpoint', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('st-reader');
  });
  afterAll(async () => dir?.remove());

  it('reads every float dtype back, from a single file, a folder and a sharded folder', async () => {
    for (const shards of [1, 3]) {
      const d = join(dir.path, `rt${shards}`);
      await writeShardedCheckpoint(d, tensors(), shards);
      for (const path of shards === 1 ? [d, join(d, 'model.safetensors')] : [d]) {
        const ck = await SafetensorsCheckpoint.open(path);
        expect(ck.dir).toBe(d);
        expect(ck.names().sort()).toEqual(['a.weight', 'b.weight', 'c.weight', 'd.weight', 'd.weight_scale_inv', 'e.ids']);
        expect(ck.has('a.weight')).toBe(true);
        expect(ck.has('zz')).toBe(false);
        expect(Array.from(await ck.readFloat32('a.weight'))).toEqual([1, 2, 3, 4, 5, 6]);
        expect(Array.from(await ck.readFloat32('b.weight'))).toEqual([1, -2]);
        expect(Array.from(await ck.readFloat32('c.weight'))).toEqual([1]);
        expect(Array.from(await ck.readFloat32('d.weight'))).toEqual([1, 2]); // raw codes, unscaled
        expect(Array.from(await readLinearWeight(ck, 'd.weight', [128, 128]))).toEqual([0.5, 1]);
        expect(Array.from(await ck.readRaw('b.weight'))).toEqual([0x80, 0x3f, 0x00, 0xc0]);
        const info = ck.info('a.weight');
        expect(info).toMatchObject({ name: 'a.weight', dtype: 'F32', shape: [2, 3], byteLength: 24 });
        expect(info.file).toMatch(shards === 1 ? /model\.safetensors$/ : /model-0000\d-of-00003\.safetensors$/);
        expect(ck.metadata()).toEqual({ format: 'pt' });
        await ck.close();
      }
    }
  });

  it('reads only the first maxBytes of a tensor when asked (a sample of a huge tensor), all of it when it is shorter', async () => {
    for (const shards of [1, 3]) {
      const ck = await SafetensorsCheckpoint.open(join(dir.path, `rt${shards}`));
      expect(Array.from(await ck.readRaw('a.weight', 8))).toEqual(Array.from(f32([1, 2])));
      expect(Array.from(await ck.readRaw('b.weight', 3))).toEqual([0x80, 0x3f, 0x00]);
      expect(Array.from(await ck.readRaw('b.weight', 1000))).toEqual([0x80, 0x3f, 0x00, 0xc0]);
      expect((await ck.readRaw('a.weight', 0)).length).toBe(0);
      await ck.close();
    }
  });

  it('refuses to read a non-float dtype as float, naming the file and the tensor', async () => {
    const ck = await SafetensorsCheckpoint.open(join(dir.path, 'rt1'));
    await expectCheckpointError(ck.readFloat32('e.ids'), /model\.safetensors$/, 'e.ids', /dtype I64 cannot be read as float/);
    expect((await ck.readRaw('e.ids')).length).toBe(8);
    await ck.close();
  });

  it('reads only the requested byte range: garbage in other tensors does not matter', async () => {
    const d = join(dir.path, 'range');
    await writeShardedCheckpoint(d, tensors(), 1);
    const ck = await SafetensorsCheckpoint.open(d);
    const a = ck.info('a.weight');
    const c = ck.info('c.weight');
    const h = await open(a.file, 'r+');
    await h.write(Buffer.alloc(a.byteLength, 0xff), 0, a.byteLength, a.byteOffset);
    await h.write(Buffer.alloc(c.byteLength, 0xff), 0, c.byteLength, c.byteOffset);
    await h.close();
    expect(Array.from(await ck.readFloat32('b.weight'))).toEqual([1, -2]);
    await ck.close();
  });

  it('reads a small tensor out of a multi-GB file without loading the file', async () => {
    // A sparse 3 GiB file: too big for readFile, instant to create, and only 8 bytes are ever read.
    const path = join(dir.path, 'huge.safetensors');
    const hugeBytes = 3 * 2 ** 30;
    // Header and the small tensor, then extend the file (with a hole) to the length the header claims.
    const header = JSON.stringify({ small: { dtype: 'BF16', shape: [4], data_offsets: [0, 8] }, huge: { dtype: 'U8', shape: [hugeBytes], data_offsets: [8, 8 + hugeBytes] } });
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    await writeFile(path, Buffer.concat([prefix, Buffer.from(header), float32ToBf16Bytes(Float32Array.of(1, 2, 3, 4))]));
    await truncate(path, 8 + header.length + 8 + hugeBytes);
    const ck = await SafetensorsCheckpoint.open(path);
    expect(ck.info('huge').byteLength).toBe(hugeBytes);
    expect(Array.from(await ck.readFloat32('small'))).toEqual([1, 2, 3, 4]);
    await ck.close();
  });

  it('keeps one handle per shard open across reads and closes them all (counted in /proc: Linux, where servers run)', async () => {
    const d = join(dir.path, 'fds');
    await writeShardedCheckpoint(d, tensors(), 3);
    const before = await openFds();
    const ck = await SafetensorsCheckpoint.open(d);
    for (let i = 0; i < 5; i++) for (const name of ck.names()) await ck.readRaw(name);
    await Promise.all(ck.names().map((n) => ck.readRaw(n)));
    expect(await openFds()).toBe(before + 3);
    await ck.close();
    expect(await openFds()).toBe(before);
    await expectCheckpointError(ck.readRaw('a.weight'), /safetensors$/, 'a.weight', /closed/);
  });

  it('reads concurrently from the same handle without mixing up byte ranges', async () => {
    const d = join(dir.path, 'concurrent');
    const many: LazyTensor[] = Array.from({ length: 40 }, (_, i) => ({ name: `t${i}`, dtype: 'F32', shape: [257], data: f32(Array.from({ length: 257 }, (_, k) => i * 1000 + k)) }));
    await mkdir(d, { recursive: true });
    await writeShardedCheckpoint(d, many, 2);
    const ck = await SafetensorsCheckpoint.open(d);
    const all = await Promise.all(many.map((t) => ck.readFloat32(t.name)));
    all.forEach((v, i) => expect([v[0], v[256]]).toEqual([i * 1000, i * 1000 + 256]));
    await ck.close();
  });
});
