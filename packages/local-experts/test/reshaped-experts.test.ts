import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { WeightReader } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { LocalRoutedExperts, restAfterBuild } from '../src/index.js';

/** A reader that remembers which experts were read from the checkpoint. */
class CountingReader extends WeightReader {
  readonly read: string[] = [];
  override routedExpert(layer: number, expert: number): ReturnType<WeightReader['routedExpert']> {
    this.read.push(`${layer}/${expert}`);
    return super.routedExpert(layer, expert);
  }
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/**
 * A plan change loads only the experts a shard gains: the graphs of the experts it keeps are shared
 * between the set serving now and the next one, and the next set's sums are those of a fresh load.
 */
describe('reshaping a set of experts', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let checkpoint: SafetensorsCheckpoint;
  const reader = (): CountingReader => new CountingReader(checkpoint, config, 'auto');
  beforeAll(async () => {
    dir = await tempDir('reshaped');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 6, fp8: true });
    config = await loadModelConfig(dir.path);
    checkpoint = await SafetensorsCheckpoint.open(dir.path);
  });
  afterAll(async () => {
    await checkpoint?.close();
    await dir?.remove();
  });

  /** Every expert of `experts` on its own token row of a 3-row batch, weighted. */
  const run = (set: LocalRoutedExperts, layer: number, experts: readonly number[]): Promise<Float32Array> => {
    const H = config.hiddenSize;
    const hidden = Float32Array.from({ length: 3 * H }, (_, i) => Math.sin(i * 0.37) * 0.5);
    return set.computePairs(layer, hidden, 3, {
      tokenRows: Int32Array.from(experts, (_, i) => i % 3),
      expertIds: Int32Array.from(experts),
      weights: Float32Array.from(experts, (_, i) => 0.1 + i * 0.05),
    });
  };

  it('reads only the experts gained, shares the kept ones, and sums as a fresh load does', async () => {
    const layer = config.moeLayers[0]!;
    const now = await LocalRoutedExperts.load(config, reader(), DEFAULT_EXECUTION, () => range(0, 7));
    const r = reader();
    const next = await now.reshaped(r, DEFAULT_EXECUTION, () => range(2, 11));
    expect(r.read.sort()).toEqual(config.moeLayers.flatMap((l) => range(8, 11).map((e) => `${l}/${e}`)).sort());
    expect(next.heldExperts(layer)).toEqual(range(2, 11));
    expect(next.holds(layer, 1)).toBe(false);
    expect(next.graphsOf(layer)).toBe(2);
    const fresh = await LocalRoutedExperts.load(config, reader(), DEFAULT_EXECUTION, () => range(2, 11));
    expect(next.weightBytes).toBe(fresh.weightBytes);
    const experts = [11, 2, 9, 7, 10, 8];
    expect(await run(next, layer, experts)).toEqual(await run(fresh, layer, experts));
    // The set it came from lets go of what it alone held; the shared graphs keep serving.
    await now.close([next]);
    expect(await run(next, layer, experts)).toEqual(await run(fresh, layer, experts));
    await expect(run(next, layer, [1])).rejects.toThrow(/expert 1 of layer \d+ is not held/);
    await Promise.all([next.close(), fresh.close()]);
  });

  it('drops a graph once fewer than half its experts are kept, and rebuilds a layer split into too many graphs', async () => {
    const layer = config.moeLayers[0]!;
    let set = await LocalRoutedExperts.load(config, reader(), DEFAULT_EXECUTION, () => range(0, 7));
    // Keeping 4 of 8 (half): nothing is read.
    const r = reader();
    const half = await set.reshaped(r, DEFAULT_EXECUTION, () => range(4, 7));
    expect(r.read).toEqual([]);
    expect(half.weightBytes).toBe(set.weightBytes / 2);
    await set.close([half]);
    // Keeping 3 of 8: the graph goes, the 3 kept are read again with the one gained.
    const r2 = reader();
    set = await half.reshaped(r2, DEFAULT_EXECUTION, () => [5, 6, 7, 9]);
    expect(r2.read.filter((k) => k.startsWith(`${layer}/`)).sort()).toEqual([`${layer}/5`, `${layer}/6`, `${layer}/7`, `${layer}/9`]);
    expect(set.graphsOf(layer)).toBe(1);
    await half.close([set]);
    // One expert gained at a time: never more graphs than a fresh load's one plus two.
    for (const e of [10, 11, 12, 13]) {
      const grown = await set.reshaped(reader(), DEFAULT_EXECUTION, (l) => [...set.heldExperts(l), e]);
      expect(grown.graphsOf(layer)).toBeLessThanOrEqual(3);
      await set.close([grown]);
      set = grown;
    }
    const fresh = await LocalRoutedExperts.load(config, reader(), DEFAULT_EXECUTION, () => set.heldExperts(layer));
    const experts = [13, 5, 10, 7, 12, 9];
    expect(await run(set, layer, experts)).toEqual(await run(fresh, layer, experts));
    await Promise.all([set.close(), fresh.close()]);
  });

  it('hands each graph\'s build time to afterGraph and builds nothing more until it resolves', async () => {
    const now = await LocalRoutedExperts.load(config, reader(), DEFAULT_EXECUTION, () => range(0, 7));
    const r = reader();
    const rests: { buildMs: number; readSoFar: number }[] = [];
    let release: () => void = () => undefined;
    let resting: Promise<void> = Promise.resolve();
    const afterGraph = (buildMs: number): Promise<void> => {
      rests.push({ buildMs, readSoFar: r.read.length });
      resting = new Promise<void>((resolve) => (release = resolve));
      return resting;
    };
    const building = now.reshaped(r, DEFAULT_EXECUTION, () => range(2, 11), afterGraph);
    // One graph per MoE layer (its 4 gained experts); while a rest lasts, no further expert is read.
    for (let i = 0; i < config.moeLayers.length; i++) {
      await vi.waitFor(() => expect(rests.length).toBe(i + 1));
      const readAtRest = r.read.length;
      for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(r.read.length).toBe(readAtRest);
      release();
    }
    const next = await building;
    expect(rests.map((x) => x.readSoFar)).toEqual(config.moeLayers.map((_, i) => 4 * (i + 1)));
    expect(rests.every((x) => x.buildMs > 0)).toBe(true);
    await now.close([next]);
    await next.close();
  });
});

describe('restAfterBuild', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('rests factor times the build time before the next graph, one loop turn with factor 0, and refuses a bad factor', async () => {
    vi.useFakeTimers();
    let done = false;
    void restAfterBuild(3)(10).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(29);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
    vi.useRealTimers();
    await expect(restAfterBuild(0)(50)).resolves.toBeUndefined();
    expect(() => restAfterBuild(-1)).toThrow(RangeError);
    expect(() => restAfterBuild(Number.NaN)).toThrow(RangeError);
  });
});
