import { describe, expect, it } from 'vitest';
import { loadShardCompute, parseExpertSpec } from '../src/index.js';
import { CheckpointLayouts, readSafetensorsHeader, type SafetensorsHeader } from '@expertmesh/weights';
import type { FileHandle } from 'node:fs/promises';
import { loadExperts } from '../src/load-shard.js';
import { float32Request, TINY_SHARD_LOAD, tinyCheckpoint } from './tiny-shard.js';

/** Pair i's routing weight in these calls. */
const weight = (i: number): number => 0.1 + i * 0.05;

/**
 * During a plan switch a shard serves its new experts and the ones it is handing over: a call may
 * name both, and gets the sums one set holding all of them gives. After the grace period the old
 * ones are refused.
 */
describe('a shard between two plans', () => {
  const checkpoint = tinyCheckpoint('switch', 4);

  it('serves old and new experts together with the sums of one set holding both, then lets the old go', async () => {
    const switching = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const both = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-15'), TINY_SHARD_LOAD);
    const layer = switching.config.moeLayers[0]!;
    switching.beginSwitch(await loadExperts(checkpoint.dir, switching, parseExpertSpec('6-15'), TINY_SHARD_LOAD));
    expect(switching.servingLayers().find((l) => l.layer === layer)!.experts).toEqual(Array.from({ length: 16 }, (_, i) => i));
    const experts = [0, 9, 7, 12, 3, 6, 15, 1];
    const mixed = await switching.run(float32Request(switching, layer, 3, experts, weight), performance.now());
    const reference = await both.run(float32Request(both, layer, 3, experts, weight), performance.now());
    const a = new Float32Array(new Uint8Array(mixed.response.output!.data as Buffer).buffer);
    const b = new Float32Array(new Uint8Array(reference.response.output!.data as Buffer).buffer);
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(b[i]!)));
    switching.retire(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(switching.holds(layer, 0)).toBe(false);
    await expect(switching.run(float32Request(switching, layer, 3, [0, 9], weight), performance.now())).rejects.toThrow(/expert 0 of layer \d+ is not held/);
    expect((await switching.run(float32Request(switching, layer, 3, [6, 9], weight), performance.now())).stats.pairs).toBe(2);
  });

  it('parses the checkpoint headers once, at start: later plan switches read none and serve the same sums', async () => {
    const headerReads: string[] = [];
    const counted = (handle: FileHandle, path: string): Promise<SafetensorsHeader> => (headerReads.push(path), readSafetensorsHeader(handle, path));
    const cached = { ...TINY_SHARD_LOAD, checkpointLayouts: new CheckpointLayouts(counted) };
    const shard = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-3'), cached);
    const atStart = headerReads.length;
    expect(atStart).toBeGreaterThan(0);
    for (const spec of ['2-9', '8-15', '0-15']) {
      shard.beginSwitch(await loadExperts(checkpoint.dir, shard, parseExpertSpec(spec), cached));
      shard.retire(0);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(headerReads).toHaveLength(atStart);
    const fresh = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-15'), TINY_SHARD_LOAD);
    const layer = shard.config.moeLayers[0]!;
    const experts = [0, 9, 7, 12, 3, 6, 15, 1];
    const a = (await shard.run(float32Request(shard, layer, 3, experts, weight), performance.now())).response.output!.data as Buffer;
    const b = (await fresh.run(float32Request(fresh, layer, 3, experts, weight), performance.now())).response.output!.data as Buffer;
    expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
  });
});
