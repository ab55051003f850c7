import { existsSync } from 'node:fs';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointIdentity, converterVersion, ggufCacheKey, ggufCachePath, partialPath, removeStaleGguf } from '../../bench/gguf-cache.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * bench:vs-llama-cpp's GGUF cache key: a GGUF is reused only for the same checkpoint (config.json and every
 * file's size and time), the same converter sources and the same output type; other files are removed.
 */
describe('the GGUF cache key', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let model: string;
  let converter: string;
  beforeAll(async () => {
    dir = await tempDir('gguf-cache');
    model = join(dir.path, 'bench');
    converter = join(dir.path, 'converter');
    await mkdir(model);
    await mkdir(converter);
    await writeFile(join(model, 'config.json'), '{"hidden_size": 64}');
    await writeFile(join(model, 'model.safetensors'), Buffer.alloc(100, 1));
    await writeFile(join(converter, 'gguf-writer.ts'), 'export const A = 1;\n');
    await writeFile(join(converter, 'gguf-from-checkpoint.ts'), 'export const B = 2;\n');
    await writeFile(join(converter, 'other.ts'), 'unrelated\n');
  });
  afterAll(async () => dir?.remove());

  const key = async (format = 'F32'): Promise<string> => ggufCacheKey({ checkpoint: await checkpointIdentity(model), converter: await converterVersion(converter), format });

  it('is the same for the same checkpoint, converter and type', async () => {
    const a = await key();
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(await key()).toBe(a);
  });

  it('changes with the output type', async () => {
    const keys = new Set([await key('F32'), await key('BF16'), await key('Q8_0')]);
    expect(keys.size).toBe(3);
  });

  it('changes when a converter source changes, not when another file does', async () => {
    const before = await key();
    await writeFile(join(converter, 'other.ts'), 'still unrelated\n');
    expect(await key()).toBe(before);
    await writeFile(join(converter, 'gguf-writer.ts'), 'export const A = 3;\n');
    const after = await key();
    expect(after).not.toBe(before);
    await writeFile(join(converter, 'gguf-new-part.ts'), 'export const C = 4;\n');
    expect(await key()).not.toBe(after);
  });

  it('changes when the checkpoint changes: its config, a weight file rewritten, a file added', async () => {
    const before = await key();
    await writeFile(join(model, 'config.json'), '{"hidden_size": 128}');
    const configChanged = await key();
    expect(configChanged).not.toBe(before);
    // Same size and bytes, written again later: another checkpoint as far as the cache can tell.
    const later = new Date(Date.now() + 60_000);
    await utimes(join(model, 'model.safetensors'), later, later);
    const rewritten = await key();
    expect(rewritten).not.toBe(configChanged);
    await writeFile(join(model, 'model-00002.safetensors'), Buffer.alloc(10));
    expect(await key()).not.toBe(rewritten);
  });

  it('names the file by model, type and key, and removes only that model and type’s other files', async () => {
    const cache = join(dir.path, 'gguf');
    await mkdir(cache);
    const current = ggufCachePath(cache, model, 'F32', '0123456789abcdef');
    expect(basename(current)).toBe('bench-F32-0123456789abcdef.gguf');
    const keep = ['bench-F32-0123456789abcdef.gguf', 'bench-Q8_0-fedcba9876543210.gguf', 'demo-F32-fedcba9876543210.gguf', `bench-F32-aaaaaaaaaaaaaaaa.gguf.partial-${process.pid}`, 'notes.txt'];
    // An older key, the unkeyed name of earlier versions, and a partial file of a process that is gone.
    const stale = ['bench-F32-fedcba9876543210.gguf', 'bench-F32.gguf', 'bench-F32-aaaaaaaaaaaaaaaa.gguf.partial-2147483646'];
    for (const f of [...keep, ...stale]) await writeFile(join(cache, f), 'x');
    const removed = await removeStaleGguf(cache, current);
    expect(removed.map((p) => basename(p)).sort()).toEqual([...stale].sort());
    expect((await readdir(cache)).sort()).toEqual([...keep].sort());
    expect(existsSync(current)).toBe(true);
    expect(partialPath(current)).toBe(`${current}.partial-${process.pid}`);
  });
});
