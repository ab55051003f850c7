/**
 * What a shard's routed-expert graphs cost to build (onnxruntime session creation, on the calling
 * thread) and to run, per onnxruntime session option and per number of experts per graph: for each
 * variant, a fresh process builds one shard's set (16 experts of each MoE layer of the checkpoint, as
 * one of 4 shards holds; weights as the shard holds them, `--weight-dtype`, auto by default), 5 times, and
 * reports the build time per graph and per layer, a layer's run (rows gathered per graph, as
 * LocalRoutedExperts does) at 1, 8 and 32 token rows with 2 of the held experts per row, the
 * resident memory the set adds, and a digest of the outputs, compared bit for bit with the baseline
 * (the graphs as LocalRoutedExperts builds them; the other session variants start from level all).
 * Every process runs with one intra-op thread, as the pinned rebalance bench's shards do.
 *   npm run bench:expert-graph-build -- [--model .tmp/models/demo-hot] [--rounds 2] [--weight-dtype auto|float32|int8|int4] [--only baseline,level] [--json out.json]
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { loadModelConfig } from '@expertmesh/model-config';
import { WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { releaseLoadBuffers, type BuiltModel } from '@expertmesh/tensor-ops';
import { sessionOptions } from '../packages/tensor-ops/src/execution.js';
import { buildRoutedExpertsGraph } from '../packages/local-experts/src/routed-experts-graph.js';
import { machineDescription } from './machine.js';

type Options = ort.InferenceSession.SessionOptions;
type SessionConfig = Record<string, unknown>;

interface Variant {
  readonly name: string;
  /** Experts per graph (today a whole layer's held experts fit in one: EXPERT_GROUP_BYTES). */
  readonly perGraph: number;
  readonly change: (o: Options) => Options;
  /** At the level the graph builder asks for (BuiltModel.optimization), as LocalRoutedExperts builds it; the others start from level all. */
  readonly served?: boolean;
}

const withConfig = (entries: SessionConfig) => (o: Options): Options => {
  const extra = (o.extra ?? {}) as { session?: SessionConfig };
  return { ...o, extra: { ...extra, session: { ...extra.session, ...entries } } };
};
const same = (o: Options): Options => o;
const VARIANTS: readonly Variant[] = [
  { name: 'baseline (as served)', perGraph: 16, change: same, served: true },
  { name: 'level all', perGraph: 16, change: (o) => ({ ...o, graphOptimizationLevel: 'all' }) },
  { name: 'level extended', perGraph: 16, change: (o) => ({ ...o, graphOptimizationLevel: 'extended' }) },
  { name: 'level basic', perGraph: 16, change: (o) => ({ ...o, graphOptimizationLevel: 'basic' }) },
  { name: 'level disabled', perGraph: 16, change: (o) => ({ ...o, graphOptimizationLevel: 'disabled' }) },
  { name: 'disable_prepacking', perGraph: 16, change: withConfig({ disable_prepacking: '1' }) },
  { name: 'no ConstantFolding', perGraph: 16, change: withConfig({}) /* set below: an optimization.* key */ },
  { name: 'optimizations loop level 0', perGraph: 16, change: withConfig({ graph_optimizations_loop_level: '0' }) },
  { name: 'enableMemPattern', perGraph: 16, change: (o) => ({ ...o, enableMemPattern: true }) },
  { name: 'device allocator for initializers', perGraph: 16, change: withConfig({ use_device_allocator_for_initializers: '1' }) },
  { name: '8 experts per graph', perGraph: 8, change: same, served: true },
  { name: '4 experts per graph', perGraph: 4, change: same, served: true },
  { name: '1 expert per graph', perGraph: 1, change: same, served: true },
  { name: '4 experts per graph, level all', perGraph: 4, change: same },
  { name: '1 expert per graph, level all', perGraph: 1, change: same },
];

/** onnxruntime-node passes `extra` as flattened config keys: `optimization.*` keys sit beside `session`. */
function optionsOf(variant: Variant, built: BuiltModel): Options {
  const base = variant.change(sessionOptions({ executionProvider: 'cpu', intraOpThreads: 1 }, built.externalFolder, variant.served ? built.optimization : 'all'));
  if (variant.name !== 'no ConstantFolding') return base;
  return { ...base, extra: { ...(base.extra as object), optimization: { disable_specified_optimizers: 'ConstantFolding' } } };
}

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: '.tmp/models/demo-hot' },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
    variant: { type: 'string' },
    // How the shard holds the experts (its --weight-dtype): auto keeps FP8/BF16 stored, widened per run.
    'weight-dtype': { type: 'string', default: 'auto' },
    // Only the variants whose names contain one of these (comma-separated), e.g. "baseline,level".
    only: { type: 'string' },
  },
});

interface VariantResult {
  readonly variant: string;
  readonly round: number;
  readonly graphsPerLayer: number;
  /** Median ms of one graph's session creation, and the longest of all. */
  readonly buildMedianMs: number;
  readonly buildLongestMs: number;
  /** Median ms to build one layer's graphs (all of them, back to back). */
  readonly layerBuildMs: number;
  /** Median ms of one layer's run (all its graphs) at 1, 8 and 32 token rows. */
  readonly runMs: Record<string, number>;
  /** Resident memory the whole set adds (MiB, after a run at 32 rows and a collection). */
  readonly residentMiB: number;
  readonly outputDigest: string;
}

const HELD = 16;
const ROWS = [1, 8, 32] as const;
const BUILDS = 5;
const RUNS = 150;

async function measure(variant: Variant, round: number): Promise<VariantResult> {
  const config = await loadModelConfig(values.model!);
  const checkpoint = await SafetensorsCheckpoint.open(values.model!);
  const reader = new WeightReader(checkpoint, config, values['weight-dtype'] as WeightDtype);
  const H = config.hiddenSize;
  const layers = config.moeLayers;
  // The models, built once (their bytes are what the shard hands onnxruntime); graph g holds experts [g·n, (g+1)·n).
  const models = [];
  for (const layer of layers) {
    const experts = [];
    for (let id = 0; id < HELD; id++) experts.push({ id, weights: await reader.routedExpert(layer, id) });
    const groups = [];
    for (let at = 0; at < HELD; at += variant.perGraph) groups.push(buildRoutedExpertsGraph(experts.slice(at, at + variant.perGraph), H, `layer${layer}_g${at}`));
    models.push(groups);
  }
  await releaseLoadBuffers();
  const rssBefore = process.memoryUsage().rss;
  const builds: number[] = [];
  const layerBuilds: number[] = [];
  let sessions: ort.InferenceSession[][] = [];
  for (let k = 0; k < BUILDS; k++) {
    for (const s of sessions.flat()) await s.release();
    sessions = [];
    for (const groups of models) {
      const layerStart = performance.now();
      const layerSessions = [];
      for (const built of groups) {
        const t0 = performance.now();
        layerSessions.push(await ort.InferenceSession.create(built.bytes, optionsOf(variant, built)));
        builds.push(performance.now() - t0);
      }
      layerBuilds.push(performance.now() - layerStart);
      sessions.push(layerSessions);
    }
  }
  // Each row picks 2 of the held experts (fixed pseudo-random), rows gathered per graph, expert after expert.
  const digest = createHash('sha256');
  const runMs: Record<string, number> = {};
  for (const rows of ROWS) {
    const x = Float32Array.from({ length: rows * H }, (_, i) => Math.sin(i * 0.37 + rows));
    const chosen = Array.from({ length: rows }, (_, r) => [(r * 7 + 3) % HELD, (r * 11 + 8) % HELD]);
    const times: number[] = [];
    for (let k = 0; k < RUNS + 3; k++) {
      for (let li = 0; li < layers.length; li++) {
        const t0 = performance.now();
        const groupSessions = sessions[li]!;
        for (let g = 0; g < groupSessions.length; g++) {
          const ids = Array.from({ length: variant.perGraph }, (_, i) => g * variant.perGraph + i);
          const rowsOf = ids.map((id) => chosen.flatMap((c, r) => (c.includes(id) ? [r] : [])));
          const total = rowsOf.reduce((a, r) => a + r.length, 0);
          if (total === 0) continue;
          const input = new Float32Array(total * H);
          let at = 0;
          for (const list of rowsOf) for (const r of list) input.set(x.subarray(r * H, (r + 1) * H), at++ * H);
          const out = await groupSessions[g]!.run({
            x: new ort.Tensor('float32', input, [total, H]),
            rows: new ort.Tensor('int64', BigInt64Array.from(rowsOf, (r) => BigInt(r.length)), [ids.length]),
          });
          if (k === 0) {
            // Digest per expert with rows, in expert order, so graphs split differently compare alike.
            const y = out.y!.data as Float32Array;
            let off = 0;
            for (let e = 0; e < ids.length; e++) {
              const n = rowsOf[e]!.length * H;
              if (n === 0) continue;
              digest.update(`${li}:${ids[e]}:`);
              digest.update(new Uint8Array(y.buffer, y.byteOffset + off * 4, n * 4));
              off += n;
            }
          }
        }
        if (k >= 3) times.push(performance.now() - t0);
      }
    }
    runMs[rows] = median(times);
  }
  await releaseLoadBuffers();
  const residentMiB = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  for (const s of sessions.flat()) await s.release();
  await checkpoint.close();
  return {
    variant: variant.name,
    round,
    graphsPerLayer: models[0]!.length,
    buildMedianMs: median(builds),
    buildLongestMs: Math.max(...builds),
    layerBuildMs: median(layerBuilds),
    runMs,
    residentMiB,
    outputDigest: digest.digest('hex').slice(0, 16),
  };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

if (values.variant !== undefined) {
  const [index, round] = values.variant.split(':').map(Number) as [number, number];
  process.stdout.write(`${JSON.stringify(await measure(VARIANTS[index]!, round))}\n`);
} else {
  const results: VariantResult[] = [];
  const rounds = Number(values.rounds);
  for (let round = 1; round <= rounds; round++) {
    for (let i = 0; i < VARIANTS.length; i++) {
      if (values.only && !values.only.split(',').some((part) => VARIANTS[i]!.name.includes(part))) continue;
      const child = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--model', values.model!, '--weight-dtype', values['weight-dtype']!, '--variant', `${i}:${round}`], { encoding: 'utf8' });
      if (child.status !== 0) throw new Error(`variant ${VARIANTS[i]!.name} failed: ${child.stderr}`);
      const result = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as VariantResult;
      results.push(result);
      process.stderr.write(`${result.variant} (round ${round}): build ${result.buildMedianMs.toFixed(2)} ms/graph, ${result.layerBuildMs.toFixed(2)} ms/layer\n`);
    }
  }
  const reference = results[0]!.outputDigest;
  process.stdout.write(`machine: ${machineDescription()}; onnxruntime-node ${ort.env.versions.node ?? ''}\n`);
  process.stdout.write('| variant | round | graphs/layer | build ms/graph (median, longest) | build ms/layer | run ms/layer at 1 / 8 / 32 rows | resident MiB | outputs = baseline |\n|---|---|---|---|---|---|---|---|\n');
  for (const r of results) {
    process.stdout.write(
      `| ${r.variant} | ${r.round} | ${r.graphsPerLayer} | ${r.buildMedianMs.toFixed(2)}, ${r.buildLongestMs.toFixed(2)} | ${r.layerBuildMs.toFixed(2)} | ${ROWS.map((n) => r.runMs[n]!.toFixed(3)).join(' / ')} | ${r.residentMiB.toFixed(1)} | ${r.outputDigest === reference} |\n`,
    );
  }
  if (values.json) await writeFile(values.json, `${JSON.stringify({ bench: 'expert-graph-build', date: new Date().toISOString(), machine: machineDescription(), model: values.model, weightDtype: values['weight-dtype'], heldPerLayer: HELD, builds: BUILDS, runs: RUNS, results }, null, 2)}\n`);
}
