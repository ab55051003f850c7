import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { encodePairs, encodeTensor, type RunExpertsRequest__Output, type Tensor__Output } from '@expertmesh/wire';
import { loadShardCompute, parseExpertSpec, type ShardCompute } from '../src/index.js';
import { CheckpointLayouts, readSafetensorsHeader, type SafetensorsHeader } from '@expertmesh/weights';
import type { FileHandle } from 'node:fs/promises';
import { loadExperts } from '../src/load-shard.js';

const load = { execution: { executionProvider: 'cpu' as const, intraOpThreads: 1 }, weightDtype: 'auto' as const };

/** A call naming (token, expert) pairs of one layer, float32 both ways. */
function request(compute: ShardCompute, layer: number, rows: number, experts: number[]): RunExpertsRequest__Output {
  const H = compute.config.hiddenSize;
  const hidden = Float32Array.from({ length: rows * H }, (_, i) => Math.sin(i * 0.37) * 0.5);
  const tokenRows = Int32Array.from(experts.map((_, i) => i % rows));
  const pairs = encodePairs({ tokenRows, expertIds: Int32Array.from(experts), weights: Float32Array.from(experts.map((_, i) => 0.1 + i * 0.05)) });
  return { requestId: '1', modelFingerprint: compute.fingerprint, layer, hidden: { rowScales: Buffer.alloc(0), ...encodeTensor(hidden, rows, H, 'float32') } as Tensor__Output, ...pairs, outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} } as unknown as RunExpertsRequest__Output;
}

/**
 * During a plan switch a shard serves its new experts and the ones it is handing over: a call may
 * name both, and gets the sums one set holding all of them gives. After the grace period the old
 * ones are refused.
 */
describe('a shard between two plans', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'expertmesh-switch-'));
    await makeCheckpoint({ preset: 'tiny', outDir: dir, seed: 4 });
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('serves old and new experts together with the sums of one set holding both, then lets the old go', async () => {
    const switching = await loadShardCompute(dir, parseExpertSpec('0-7'), load);
    const both = await loadShardCompute(dir, parseExpertSpec('0-15'), load);
    const layer = switching.config.moeLayers[0]!;
    switching.beginSwitch(await loadExperts(dir, switching, parseExpertSpec('6-15'), load));
    expect(switching.servingLayers().find((l) => l.layer === layer)!.experts).toEqual(Array.from({ length: 16 }, (_, i) => i));
    const experts = [0, 9, 7, 12, 3, 6, 15, 1];
    const mixed = await switching.run(request(switching, layer, 3, experts), performance.now());
    const reference = await both.run(request(both, layer, 3, experts), performance.now());
    const a = new Float32Array(new Uint8Array(mixed.response.output!.data as Buffer).buffer);
    const b = new Float32Array(new Uint8Array(reference.response.output!.data as Buffer).buffer);
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(b[i]!)));
    switching.retire(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(switching.holds(layer, 0)).toBe(false);
    await expect(switching.run(request(switching, layer, 3, [0, 9]), performance.now())).rejects.toThrow(/expert 0 of layer \d+ is not held/);
    expect((await switching.run(request(switching, layer, 3, [6, 9]), performance.now())).stats.pairs).toBe(2);
  });

  it('parses the checkpoint headers once, at start: later plan switches read none and serve the same sums', async () => {
    const headerReads: string[] = [];
    const counted = (handle: FileHandle, path: string): Promise<SafetensorsHeader> => (headerReads.push(path), readSafetensorsHeader(handle, path));
    const cached = { ...load, checkpointLayouts: new CheckpointLayouts(counted) };
    const shard = await loadShardCompute(dir, parseExpertSpec('0-3'), cached);
    const atStart = headerReads.length;
    expect(atStart).toBeGreaterThan(0);
    for (const spec of ['2-9', '8-15', '0-15']) {
      shard.beginSwitch(await loadExperts(dir, shard, parseExpertSpec(spec), cached));
      shard.retire(0);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(headerReads).toHaveLength(atStart);
    const fresh = await loadShardCompute(dir, parseExpertSpec('0-15'), load);
    const layer = shard.config.moeLayers[0]!;
    const experts = [0, 9, 7, 12, 3, 6, 15, 1];
    const a = (await shard.run(request(shard, layer, 3, experts), performance.now())).response.output!.data as Buffer;
    const b = (await fresh.run(request(fresh, layer, 3, experts), performance.now())).response.output!.data as Buffer;
    expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
  });
});
