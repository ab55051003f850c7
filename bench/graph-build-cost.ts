/**
 * What building one routed-experts graph costs (onnxruntime session creation, on the calling thread)
 * for 1, 2, 4 and 16 experts of one layer, at each graph optimisation level, with its first and later
 * runs, and whether the outputs equal those of level "all" bit for bit. Measured to see whether a
 * cheaper build could shorten the pause of a plan switch (bench:rebalance).
 *   node --import tsx bench/graph-build-cost.ts [--model .tmp/models/demo-hot]
 */
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { loadModelConfig } from '@expertmesh/model-config';
import { WeightReader } from '@expertmesh/model-weights';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { buildRoutedExpertsGraph } from '../packages/local-experts/src/routed-experts-graph.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: '.tmp/models/demo-hot' } } });
const config = await loadModelConfig(values.model!);
const checkpoint = await SafetensorsCheckpoint.open(values.model!);
const reader = new WeightReader(checkpoint, config, 'auto');
const layer = config.moeLayers[0]!;
for (const n of [1, 2, 4, 16]) {
  const experts = [];
  for (let i = 0; i < n; i++) experts.push({ id: i, weights: await reader.routedExpert(layer, i) });
  const built = buildRoutedExpertsGraph(experts, config.hiddenSize, `g${n}`);
  const feeds: Record<string, ort.Tensor> = {};
  for (const { id } of experts) {
    const rows = id === 0 ? 3 : 0;
    feeds[`x_${id}`] = new ort.Tensor('float32', Float32Array.from({ length: rows * config.hiddenSize }, (_, i) => Math.sin(i)), [rows, config.hiddenSize]);
  }
  let reference: Float32Array | null = null;
  for (const level of ['all', 'extended', 'basic', 'disabled'] as const) {
    const builds: number[] = [];
    let first = 0;
    let later = 0;
    let same = true;
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      const session = await ort.InferenceSession.create(built.bytes, {
        logSeverityLevel: 3,
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: level,
        enableCpuMemArena: false,
        extra: { session: { intra_op: { allow_spinning: '0' }, ...(built.externalFolder ? { model_external_initializers_file_folder_path: built.externalFolder } : {}) } },
      });
      builds.push(performance.now() - t0);
      const t1 = performance.now();
      const y = (await session.run(feeds)).y!.data as Float32Array;
      first += performance.now() - t1;
      const t2 = performance.now();
      for (let r = 0; r < 10; r++) await session.run(feeds);
      later += (performance.now() - t2) / 10;
      if (!reference) reference = y;
      else same &&= y.every((v, i) => Object.is(v, reference![i]));
      await session.release();
    }
    builds.sort((a, b) => a - b);
    process.stdout.write(`| ${n} | ${level} | ${builds[2]!.toFixed(1)} | ${(first / 5).toFixed(2)} | ${(later / 5).toFixed(3)} | ${same} |\n`);
  }
}
await checkpoint.close();
