/**
 * One MoE layer graph of the bench preset at a decode step (B sequences of `--context` cached
 * tokens each), run under onnxruntime's profiler: each operator's kernel time, and their sum per
 * part of the layer (attention input, attention core over the latent cache, attention output with
 * the gate and the shared expert), by the builder's node names; and the minor page faults a run.
 *   node --import tsx bench/layer-graph-anatomy.ts [--model DIR] [--weight-dtype float32|int8] [--batch 32] [--context 136] [--layer 1] [--runs 40] [--shared-in-graph true|false]
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { attentionSoftmaxScale, loadModelConfig } from '@expertmesh/model-config';
import { WeightReader, WEIGHT_DTYPES, type WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION, f32, Graph, i32, OnnxModelBuilder } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { ATTENTION_SETS, planAttention } from '../packages/model/src/attention-batch.js';
import { appendAttentionCore } from '../packages/model/src/graphs/attention-core-graph.js';
import { appendAttentionInput } from '../packages/model/src/graphs/attention-input-graph.js';
import { appendAttentionOutput } from '../packages/model/src/graphs/attention-output-graph.js';
import { splitKvB } from '../packages/model/src/graphs/kv-b-split.js';
import { LatentKvCache } from '../packages/model/src/kv-cache.js';
import { RotaryTable } from '../packages/model/src/rotary-table.js';
import { ensureBenchModel } from './bench-model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    'weight-dtype': { type: 'string', default: 'float32' },
    batch: { type: 'string', default: '32' },
    context: { type: 'string', default: '136' },
    layer: { type: 'string', default: '1' },
    runs: { type: 'string', default: '40' },
    // `false`: the shared expert off the graph, as where it runs on the native kernel (--expert-kernel auto|native).
    'shared-in-graph': { type: 'string', default: 'true' },
  },
});
const weightDtype = values['weight-dtype'] as WeightDtype;
if (!WEIGHT_DTYPES.includes(weightDtype)) throw new Error(`--weight-dtype must be one of ${WEIGHT_DTYPES.join(', ')}`);
const B = Number(values.batch);
const context = Number(values.context);
const layer = Number(values.layer);
const runs = Number(values.runs);
const modelDir = await ensureBenchModel(values.model);
const config = await loadModelConfig(modelDir);
const checkpoint = await SafetensorsCheckpoint.open(modelDir);
const w = await new WeightReader(checkpoint, config, weightDtype).layer(layer);

// The layer graph as buildLayerGraph makes it, noting the node counter between its parts.
const b = new OnnxModelBuilder(`layer${layer}`);
const counter = (): number => (b as unknown as { counter: { next: number } }).counter.next;
const { hiddenSize: H, qkRopeHeadDim: rope, kvLoraRank: R } = config;
const x = b.input('x', 'float32', ['T', H]);
const cos = b.input('cos', 'float32', ['T', rope / 2]);
const sin = b.input('sin', 'float32', ['T', rope / 2]);
const { keyUp, valueUp } = splitKvB(b, config, w.attention.kvB);
const { q, kv } = appendAttentionInput(b, config, w.attention, attentionSoftmaxScale(config), keyUp, { x, cos, sin });
b.alias(kv, 'kv');
b.output('kv', 'float32', ['T', R + rope]);
const inputEnd = counter();
const oLatent = appendAttentionCore(b, config, q, kv);
const coreEnd = counter();
appendAttentionOutput(b, config, w, valueUp, { oLatent, x }, values['shared-in-graph'] !== 'false');
const partOf = (node: string): string => {
  const n = Number(/_(\d+)(_\d+)?$/.exec(node)?.[1] ?? NaN);
  if (Number.isNaN(n)) return `other (${node})`;
  return n < inputEnd ? 'attention input' : n < coreEnd ? 'attention core' : 'attention output + gate + shared expert';
};

const profileDir = join('.tmp', 'layer-profile');
await rm(profileDir, { recursive: true, force: true });
await mkdir(profileDir, { recursive: true });
const create = ort.InferenceSession.create.bind(ort.InferenceSession) as (bytes: Uint8Array, options: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>;
(ort.InferenceSession as unknown as { create: typeof create }).create = (bytes, options) =>
  create(bytes, { ...options, enableProfiling: true, profileFilePrefix: join(profileDir, 'layer') });
const graph = await Graph.create(`layer${layer}`, b.build(), DEFAULT_EXECUTION);
await checkpoint.close();

// B decode tokens, each after `context` cached rows (random latent rows in the pool).
const cache = LatentKvCache.forModel(config, B * (context + 16));
let seed = 1;
for (const p of cache.pools) for (let i = 0; i < p.length; i++) p[i] = ((seed = (seed * 48271) % 2147483647) / 2147483647 - 0.5) * 0.2;
const perSeq = Math.ceil((context + 1) / cache.blockSize);
const segments = Array.from({ length: B }, (_, s) => ({ blocks: Array.from({ length: perSeq }, (_, k) => s * perSeq + k), startPosition: context, length: 1 }));
const plan = planAttention(cache, segments);
const { cos: c, sin: s } = new RotaryTable(config).forPositions(Int32Array.from(segments, () => context));
const xs = new Float32Array(B * H).map(() => ((seed = (seed * 48271) % 2147483647) / 2147483647 - 0.5) * 2);
const pool = cache.pools[layer]!;
const feeds: Record<string, ort.Tensor> = { x: f32(xs, [B, H]), cos: f32(c, [B, rope / 2]), sin: f32(s, [B, rope / 2]), pool: f32(pool, [pool.length / cache.rowSize, cache.rowSize]) };
feeds.output_rows = i32(plan.outputRows, [B]);
for (const name of ATTENTION_SETS) {
  const set = plan.sets[name];
  feeds[`${name}_rows`] = i32(set.rows, [set.groups, set.queryLength]);
  feeds[`${name}_cached_slots`] = i32(set.cachedSlots, [set.groups, set.cachedLength]);
  feeds[`${name}_mask`] = f32(set.mask, [set.groups, set.queryLength, 1, set.cachedLength + set.queryLength]);
}
for (let i = 0; i < 5; i++) await graph.run(feeds);
const faults0 = process.resourceUsage().minorPageFault;
const t0 = performance.now();
for (let i = 0; i < runs; i++) await graph.run(feeds);
const runMs = (performance.now() - t0) / runs;
const faultsPerRun = (process.resourceUsage().minorPageFault - faults0) / runs;
console.log(`layer ${layer}, ${weightDtype}, batch ${B}, context ${context}: ${runMs.toFixed(3)} ms a run (wall), ${faultsPerRun.toFixed(0)} minor page faults a run`);
{
  (graph as unknown as { session: ort.InferenceSession }).session.endProfiling();
  await graph.release();
  const file = (await readdir(profileDir)).find((f) => f.endsWith('.json'));
  const events = JSON.parse(await readFile(join(profileDir, file!), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const byNode = new Map<string, { op: string; us: number; n: number }>();
  const runEvents = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  for (const e of kernels) {
    const node = e.name.slice(0, -'_kernel_time'.length);
    const v = byNode.get(node) ?? { op: e.args?.op_name ?? '?', us: 0, n: 0 };
    v.us += e.dur;
    v.n++;
    byNode.set(node, v);
  }
  const total = runEvents.length;
  const perRun = (us: number): number => us / total;
  const parts = new Map<string, number>();
  for (const [node, v] of byNode) parts.set(partOf(node), (parts.get(partOf(node)) ?? 0) + v.us);
  console.log(`${total} profiled runs, model_run ${(perRun(runEvents.reduce((a, e) => a + e.dur, 0)) / 1000).toFixed(3)} ms, kernels ${(perRun(kernels.reduce((a, e) => a + e.dur, 0)) / 1000).toFixed(3)} ms a run`);
  for (const [part, us] of [...parts].sort((a, b) => b[1] - a[1])) console.log(`  ${part}: ${(perRun(us) / 1000).toFixed(3)} ms`);
  console.log('operators, µs a run:');
  for (const [node, v] of [...byNode].sort((a, b) => b[1].us - a[1].us).slice(0, 40)) console.log(`  ${perRun(v.us).toFixed(1).padStart(8)}  ${v.op.padEnd(28)} ${node}  [${partOf(node)}]`);
}
