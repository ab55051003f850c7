import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as ort from 'onnxruntime-node';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION, f32, floatData, Graph, i64 } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { LocalRoutedExperts } from '../src/index.js';
import { buildRoutedExpertsGraph } from '../src/routed-experts-graph.js';

/**
 * A plan switch builds its routed-expert graphs on the shard's serving thread. Graphs of experts held
 * stored (FP8, BF16: widened in the graph at every run) gain nothing from onnxruntime's graph
 * optimisation, which is most of their build time (bench:expert-graph-build), so they are built
 * without it; float32 and quantised experts keep level "all" (without it their runs are several times
 * slower and their outputs change). The outputs must not change by a bit.
 */
describe('graph optimisation of routed-expert graphs', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let checkpoint: SafetensorsCheckpoint;
  const experts = async (dtype: WeightDtype, ids: readonly number[]) => {
    const reader = new WeightReader(checkpoint, config, dtype);
    return Promise.all(ids.map(async (id) => ({ id, weights: await reader.routedExpert(config.moeLayers[0]!, id) })));
  };
  beforeAll(async () => {
    dir = await tempDir('graph-optimization');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 11, fp8: true });
    config = await loadModelConfig(dir.path);
    checkpoint = await SafetensorsCheckpoint.open(dir.path);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await checkpoint?.close();
    await dir?.remove();
  });

  it('stored experts are built without graph optimisation, float32 and int8 experts with all of it', async () => {
    expect(buildRoutedExpertsGraph(await experts('auto', [0, 1, 2]), config.hiddenSize, 'stored').optimization).toBe('disabled');
    expect(buildRoutedExpertsGraph(await experts('float32', [0, 1, 2]), config.hiddenSize, 'float32').optimization ?? 'all').toBe('all');
    expect(buildRoutedExpertsGraph(await experts('int8', [0, 1, 2]), config.hiddenSize, 'int8').optimization ?? 'all').toBe('all');
  });

  it('the level reaches onnxruntime for every graph a load builds', async () => {
    const create = vi.spyOn(ort.InferenceSession, 'create');
    const set = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, 'auto'), DEFAULT_EXECUTION, () => [0, 3, 5, 6]);
    const levels = create.mock.calls.map((call) => (call.at(-1) as ort.InferenceSession.SessionOptions).graphOptimizationLevel);
    expect(levels).toEqual(config.moeLayers.map(() => 'disabled'));
    create.mockClear();
    const grown = await set.reshaped(new WeightReader(checkpoint, config, 'float32'), { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' }, () => [0, 3, 5, 6, 9]);
    // The expert gained is held as float32: its graph is optimised.
    expect(create.mock.calls.map((call) => (call.at(-1) as ort.InferenceSession.SessionOptions).graphOptimizationLevel)).toEqual(config.moeLayers.map(() => 'all'));
    await set.close([grown]);
    await grown.close();
  });

  it('outputs equal those of the same graph built with all optimisations, bit for bit', async () => {
    const ids = [0, 2, 4, 5, 7];
    const built = buildRoutedExpertsGraph(await experts('auto', ids), config.hiddenSize, 'unoptimised');
    const unoptimised = await Graph.create('unoptimised', built, DEFAULT_EXECUTION);
    const optimised = await Graph.create('optimised', { ...built, optimization: 'all' }, DEFAULT_EXECUTION);
    try {
      const H = config.hiddenSize;
      // Rows per expert, some experts without rows (their If branch is the empty one).
      for (const sizes of [[1, 0, 0, 0, 0], [3, 0, 2, 1, 0], [0, 5, 0, 0, 9], [2, 2, 2, 2, 2]]) {
        const total = sizes.reduce((a, b) => a + b, 0);
        const x = Float32Array.from({ length: total * H }, (_, i) => Math.sin(i * 0.61 + total) * 0.8);
        const feeds = () => ({ x: f32(x, [total, H]), rows: i64(BigInt64Array.from(sizes, BigInt), [sizes.length]) });
        const a = floatData((await unoptimised.run(feeds())).y, 'unoptimised', 'y');
        const b = floatData((await optimised.run(feeds())).y, 'optimised', 'y');
        expect(a.length).toBe(total * H);
        expect(a.some((v) => v !== 0)).toBe(true);
        expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))).toBe(true);
      }
    } finally {
      await unoptimised.release();
      await optimised.release();
    }
  });
});
