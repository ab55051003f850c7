import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsCheckpoint, shardFileName, writeSafetensors, writeShardedCheckpoint, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

const f32 = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: number[] }> & { __metadata__?: Record<string, string> };

async function readLayout(path: string): Promise<{ bytes: Buffer; headerLength: number; header: Header }> {
  const bytes = await readFile(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  return { bytes, headerLength, header: JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as Header };
}

describe('writeSafetensors', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('st-writer');
  });
  afterAll(async () => dir?.remove());

  it('writes the reference layout: u64 LE header length, JSON padded with spaces to 8 bytes, data in the given order', async () => {
    const path = join(dir.path, 'layout.safetensors');
    const size = await writeSafetensors(path, [
      { name: 'z', dtype: 'F32', shape: [2, 3], data: f32([1, 2, 3, 4, 5, 6]) },
      { name: 'a', dtype: 'BF16', shape: [2], data: Uint8Array.of(0x80, 0x3f, 0x00, 0xc0) },
      { name: 'e', dtype: 'I64', shape: [0], data: new Uint8Array(0) },
      { name: 'm', dtype: 'F8_E4M3', shape: [], data: Uint8Array.of(0x38) },
    ]);
    const { bytes, headerLength, header } = await readLayout(path);
    expect(size).toBe(bytes.length);
    expect(headerLength % 8).toBe(0);
    const text = bytes.subarray(8, 8 + headerLength).toString();
    expect(text).toMatch(/^\{"__metadata__":\{"format":"pt"\},"z":.*\} *$/); // metadata first, then the given order
    expect(text.trimEnd().length).toBeGreaterThan(headerLength - 8);
    expect(header.z).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
    expect(header.a!.data_offsets).toEqual([24, 28]);
    expect(header.e!.data_offsets).toEqual([28, 28]);
    expect(header.m).toEqual({ dtype: 'F8_E4M3', shape: [], data_offsets: [28, 29] });
    expect(bytes.length).toBe(8 + headerLength + 29);
    expect([...bytes.subarray(8 + headerLength + 24)]).toEqual([0x80, 0x3f, 0x00, 0xc0, 0x38]);
  });

  it('writes the given metadata, or none when it is empty', async () => {
    const p1 = join(dir.path, 'meta.safetensors');
    await writeSafetensors(p1, [{ name: 'x', dtype: 'U8', shape: [1], data: Uint8Array.of(7) }], { format: 'pt', note: 'hi' });
    expect((await readLayout(p1)).header.__metadata__).toEqual({ format: 'pt', note: 'hi' });
    const p2 = join(dir.path, 'nometa.safetensors');
    await writeSafetensors(p2, [{ name: 'x', dtype: 'U8', shape: [1], data: Uint8Array.of(7) }], {});
    expect((await readLayout(p2)).header.__metadata__).toBeUndefined();
  });

  it('takes an async iterable of tensors whose bytes come lazily, one tensor at a time, in chunks or promises', async () => {
    let alive = 0;
    let maxAlive = 0;
    const produced: string[] = [];
    async function* source(): AsyncGenerator<LazyTensor> {
      for (let i = 0; i < 6; i++) {
        const name = `t${i}`;
        yield {
          name,
          dtype: 'F32',
          shape: [1000],
          data: () => {
            produced.push(name);
            alive++;
            maxAlive = Math.max(maxAlive, alive);
            // Chunks of 1000 bytes; the tensor's memory is "released" once its last chunk is consumed.
            return (async function* () {
              const all = f32(Array.from({ length: 1000 }, (_, k) => i * 1000 + k));
              for (let off = 0; off < all.length; off += 1000) yield all.subarray(off, off + 1000);
              alive--;
            })();
          },
        };
      }
    }
    const path = join(dir.path, 'lazy.safetensors');
    await writeSafetensors(path, source());
    expect(produced).toEqual(['t0', 't1', 't2', 't3', 't4', 't5']);
    expect(maxAlive).toBe(1);
    const ck = await SafetensorsCheckpoint.open(path);
    expect((await ck.readFloat32('t4'))[17]).toBe(4017);
    await ck.close();
    const p2 = join(dir.path, 'promise.safetensors');
    await writeSafetensors(p2, [{ name: 'x', dtype: 'F16', shape: [1], data: async () => Uint8Array.of(0x00, 0x3c) }]);
    const ck2 = await SafetensorsCheckpoint.open(p2);
    expect(Array.from(await ck2.readFloat32('x'))).toEqual([1]);
    await ck2.close();
  });

  it('names the file and the tensor when data has the wrong size, and leaves no partial file', async () => {
    const path = join(dir.path, 'short.safetensors');
    const good: LazyTensor = { name: 'ok', dtype: 'F32', shape: [1], data: f32([1]) };
    await expectCheckpointError(
      writeSafetensors(path, [good, { name: 'bad', dtype: 'F32', shape: [2, 2], data: () => f32([1, 2, 3]) }]),
      /short\.safetensors$/,
      'bad',
      /gave 12 bytes but F32\[2, 2\] needs 16/,
    );
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
    const many = (function* () {
      for (;;) yield new Uint8Array(8);
    })();
    await expectCheckpointError(writeSafetensors(path, [{ name: 'endless', dtype: 'U8', shape: [20], data: () => many }]), /short\.safetensors$/, 'endless', /more than 20 bytes/);
  });

  it('rejects duplicate and reserved names before writing', async () => {
    const path = join(dir.path, 'dup.safetensors');
    const t: LazyTensor = { name: 'x', dtype: 'U8', shape: [1], data: Uint8Array.of(1) };
    await expectCheckpointError(writeSafetensors(path, [t, t]), /dup\.safetensors$/, 'x', /listed twice/);
    await expectCheckpointError(writeSafetensors(path, [{ ...t, name: '__metadata__' }]), /dup\.safetensors$/, '__metadata__', /not a usable tensor name/);
    await expectCheckpointError(writeSafetensors(path, [{ ...t, shape: [-1] }]), /dup\.safetensors$/, 'x', /not a list of sizes/);
  });
});

describe('writeShardedCheckpoint', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('st-shards');
  });
  afterAll(async () => dir?.remove());

  const tensors = (sizes: number[]): LazyTensor[] => sizes.map((n, i) => ({ name: `layer.${i}.weight`, dtype: 'U8', shape: [n], data: () => new Uint8Array(n).fill(i) }));

  it('uses Hugging Face shard names', () => {
    expect(shardFileName(0, 3)).toBe('model-00001-of-00003.safetensors');
    expect(shardFileName(162, 163)).toBe('model-00163-of-00163.safetensors');
  });

  it('writes N shards of about equal bytes plus an index with total_size and a sorted weight_map', async () => {
    const d = join(dir.path, 'even');
    const sizes = Array.from({ length: 12 }, (_, i) => 100 + i);
    const { files, totalBytes } = await writeShardedCheckpoint(d, tensors(sizes), 3);
    expect(files).toEqual(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json']);
    expect((await readdir(d)).sort()).toEqual([...files].sort());
    const index = JSON.parse(await readFile(join(d, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.metadata.total_size).toBe(sizes.reduce((a, b) => a + b, 0));
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort());
    const perShard = [0, 0, 0];
    sizes.forEach((n, i) => (perShard[Number(/model-0000(\d)/.exec(index.weight_map[`layer.${i}.weight`]!)![1]) - 1]! += n));
    for (const b of perShard) expect(b).toBeGreaterThan(300);
    let onDisk = 0;
    for (const f of files.slice(0, 3)) onDisk += (await stat(join(d, f))).size;
    expect(totalBytes).toBe(onDisk);
  });

  it('never leaves a shard empty, even when one tensor dominates, and caps N at the tensor count', async () => {
    const d = join(dir.path, 'skewed');
    await writeShardedCheckpoint(d, tensors([10_000, 1, 1, 1]), 4);
    const ck = await SafetensorsCheckpoint.open(d);
    expect(new Set(ck.names().map((n) => ck.info(n).file)).size).toBe(4);
    await ck.close();
    const d2 = join(dir.path, 'capped');
    const { files } = await writeShardedCheckpoint(d2, tensors([5, 5]), 5);
    expect(files).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  });

  it('with one shard writes model.safetensors alone and drops a stale index', async () => {
    const d = join(dir.path, 'single');
    await writeShardedCheckpoint(d, tensors([3, 4]), 2);
    await writeShardedCheckpoint(d, tensors([3, 4, 5]), 1);
    expect(await readdir(d)).not.toContain('model.safetensors.index.json');
    const ck = await SafetensorsCheckpoint.open(d);
    expect(ck.names()).toEqual(['layer.0.weight', 'layer.1.weight', 'layer.2.weight']);
    expect(Array.from(await ck.readRaw('layer.2.weight'))).toEqual([2, 2, 2, 2, 2]);
    await ck.close();
  });

  it('writes tensors from a generator, making each one\'s bytes only when its turn comes', async () => {
    const d = join(dir.path, 'streamed');
    let made = 0;
    function* source(): Generator<LazyTensor> {
      for (let i = 0; i < 48; i++) yield { name: `w${i}`, dtype: 'BF16', shape: [512, 1024], data: () => (made++, new Uint8Array(1 << 20).fill(i)) };
    }
    const { totalBytes } = await writeShardedCheckpoint(d, source(), 4);
    expect(made).toBe(48);
    expect(totalBytes).toBeGreaterThan(48 << 20);
    const ck = await SafetensorsCheckpoint.open(d);
    expect((await ck.readRaw('w37'))[12345]).toBe(37);
    await ck.close();
  });

  it('rejects a bad shard count', async () => {
    await expect(writeShardedCheckpoint(join(dir.path, 'x'), tensors([1]), 0)).rejects.toThrow(/shards must be a positive integer/);
  });

  it('writes the index as transformers does (2-space JSON, trailing newline) and the reader accepts it', async () => {
    const d = join(dir.path, 'idx');
    await writeShardedCheckpoint(d, tensors([1, 2, 3]), 2);
    const text = await readFile(join(d, 'model.safetensors.index.json'), 'utf8');
    expect(text.endsWith('}\n')).toBe(true);
    expect(text).toContain('\n  "metadata": {\n    "total_size": 6\n  },');
    await writeFile(join(d, 'extra.txt'), 'ignored');
    const ck = await SafetensorsCheckpoint.open(d);
    expect(ck.names().sort()).toEqual(['layer.0.weight', 'layer.1.weight', 'layer.2.weight']);
    await ck.close();
  });
});
