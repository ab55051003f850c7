/**
 * Grouped expert products that onnxruntime's CPU build offers, against the layer graph LocalRoutedExperts
 * uses, for one MoE layer at the `bench` preset's widths (hidden 1024, 64 float32 experts of width 512,
 * top-8), batch 1, 8 and 32, 16 routings cycled:
 * - layer:   the layer graph as held (buildRoutedExpertsGraph: two products per expert, one activation);
 * - moe:     com.microsoft `MoE` (float32), gate/up interleaved [E, 2I, H] and down [E, H, I] as one
 *            initializer each; one row per (token, expert) pair with k = 1 and a router row that is 0 at
 *            the chosen expert and −∞ elsewhere, so its routing weight is exactly 1;
 * - batched: one batched MatMul per projection over all experts' weights stacked as [E, H, 2I] and
 *            [E, I, H], each expert's rows padded with zeros to the largest expert's count.
 * Each candidate's outputs (unweighted, per pair) are checked against the layer graph's.
 *   node --import tsx bench/expert-layout-candidates.ts [--batches 1,8,32] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildRoutedExpertsGraph } from '../packages/local-experts/src/routed-experts-graph.js';
import { DEFAULT_EXECUTION, f32, floatData, Graph, i64, memoryWeight, OnnxModelBuilder, silu } from '@expertmesh/tensor-ops';
import { seededRandom } from './random-routing.js';

const { values } = parseArgs({ options: { batches: { type: 'string', default: '1,8,32' }, out: { type: 'string' } } });
const batches = values.batches.split(',').map(Number);
const E = 64;
const H = 1024;
const I = 512;
const TOP_K = 8;
const ROUTINGS = 16;

function seeded(n: number, seed: number): Float32Array {
  const next = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (next() - 0.5) / 8);
}
const bytesOf = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const gate = Array.from({ length: E }, (_, e) => seeded(I * H, 3 * e + 1));
const up = Array.from({ length: E }, (_, e) => seeded(I * H, 3 * e + 2));
const down = Array.from({ length: E }, (_, e) => seeded(H * I, 3 * e + 3));

/** A batch: hidden rows and (token, expert) pairs; `byExpert[e]` lists the pairs of expert e. */
interface Batch {
  readonly x: Float32Array;
  readonly tokens: Int32Array;
  readonly experts: Int32Array;
  readonly byExpert: readonly number[][];
}
function batchOf(T: number, seed: number): Batch {
  const next = seededRandom(seed);
  const tokens = new Int32Array(T * TOP_K);
  const experts = new Int32Array(T * TOP_K);
  for (let t = 0, k = 0; t < T; t++) {
    const chosen = new Set<number>();
    while (chosen.size < TOP_K) chosen.add(Math.floor(next() * E));
    for (const e of chosen) [tokens[k], experts[k++]] = [t, e];
  }
  const byExpert = Array.from({ length: E }, (): number[] => []);
  experts.forEach((e, p) => byExpert[e]!.push(p));
  return { x: seeded(T * H, seed + 7), tokens, experts, byExpert };
}
const rowOf = (b: Batch, p: number): Float32Array => b.x.subarray(b.tokens[p]! * H, (b.tokens[p]! + 1) * H);

/** Runs a batch and returns each pair's unweighted expert output, [pairs, H] in pair order. */
type Candidate = (b: Batch) => Promise<Float32Array>;

async function layerGraph(): Promise<Candidate> {
  const experts = Array.from({ length: E }, (_, e) => ({ id: e, weights: { gate: memoryWeight(gate[e]!, [I, H]), up: memoryWeight(up[e]!, [I, H]), down: memoryWeight(down[e]!, [H, I]), hidden: H, intermediate: I } }));
  const graph = await Graph.create('layer', buildRoutedExpertsGraph(experts, H, 'layer'), DEFAULT_EXECUTION);
  return async (b) => {
    const order = b.byExpert.flat();
    const x = new Float32Array(order.length * H);
    order.forEach((p, r) => x.set(rowOf(b, p), r * H));
    const y = floatData((await graph.run({ x: f32(x, [order.length, H]), rows: i64(BigInt64Array.from(b.byExpert, (ps) => BigInt(ps.length)), [E]) })).y, 'layer', 'y');
    const out = new Float32Array(order.length * H);
    order.forEach((p, r) => out.set(y.subarray(r * H, (r + 1) * H), p * H));
    return out;
  };
}

async function moeOperator(): Promise<Candidate> {
  const fc1 = new Float32Array(E * 2 * I * H);
  const fc2 = new Float32Array(E * H * I);
  for (let e = 0; e < E; e++) {
    for (let i = 0; i < I; i++) {
      fc1.set(gate[e]!.subarray(i * H, (i + 1) * H), (e * 2 * I + 2 * i) * H);
      fc1.set(up[e]!.subarray(i * H, (i + 1) * H), (e * 2 * I + 2 * i + 1) * H);
    }
    fc2.set(down[e]!, e * H * I);
  }
  const m = new OnnxModelBuilder('moe');
  const x = m.input('x', 'float32', ['P', H]);
  const router = m.input('router', 'float32', ['P', E]);
  const w1 = m.constant({ type: 'float32', dims: [E, 2 * I, H], bytes: bytesOf(fc1) }, 'fc1');
  const w2 = m.constant({ type: 'float32', dims: [E, H, I], bytes: bytesOf(fc2) }, 'fc2');
  // SwiGLU as DeepSeek's: silu(gate) · up (alpha 1, no +1 on up, no clamp).
  const attributes = { k: 1, activation_type: 'swiglu', swiglu_fusion: 1, activation_alpha: { float: 1 }, activation_beta: { float: 0 }, swiglu_limit: { float: 3e38 }, normalize_routing_weights: 0 };
  m.alias(m.op('MoE', [x, router, w1, '', w2], attributes, { domain: 'com.microsoft' }), 'y');
  m.output('y', 'float32', ['P', H]);
  const graph = await Graph.create('moe', m.build(), DEFAULT_EXECUTION);
  return async (b) => {
    const P = b.experts.length;
    const xs = new Float32Array(P * H);
    const r = new Float32Array(P * E).fill(-Infinity);
    for (let p = 0; p < P; p++) {
      xs.set(rowOf(b, p), p * H);
      r[p * E + b.experts[p]!] = 0;
    }
    return floatData((await graph.run({ x: f32(xs, [P, H]), router: f32(r, [P, E]) })).y, 'moe', 'y');
  };
}

async function batchedMatMul(): Promise<Candidate> {
  const wGateUp = new Float32Array(E * H * 2 * I);
  const wDown = new Float32Array(E * I * H);
  for (let e = 0; e < E; e++) {
    for (let k = 0; k < H; k++) {
      for (let i = 0; i < I; i++) {
        wGateUp[(e * H + k) * 2 * I + i] = gate[e]![i * H + k]!;
        wGateUp[(e * H + k) * 2 * I + I + i] = up[e]![i * H + k]!;
      }
    }
    for (let i = 0; i < I; i++) for (let k = 0; k < H; k++) wDown[(e * I + i) * H + k] = down[e]![k * I + i]!;
  }
  const m = new OnnxModelBuilder('batched');
  const x = m.input('x', 'float32', [E, 'M', H]);
  const gateUp = m.op('MatMul', [x, m.constant({ type: 'float32', dims: [E, H, 2 * I], bytes: bytesOf(wGateUp) }, 'gate_up')]);
  const [g, u] = m.opMulti('Split', [gateUp, m.int64s([I, I])], { axis: -1 }, { outputs: 2 }) as [string, string];
  m.alias(m.op('MatMul', [m.op('Mul', [silu(m, g), u]), m.constant({ type: 'float32', dims: [E, I, H], bytes: bytesOf(wDown) }, 'down')]), 'y');
  m.output('y', 'float32', [E, 'M', H]);
  const graph = await Graph.create('batched', m.build(), DEFAULT_EXECUTION);
  return async (b) => {
    const M = Math.max(...b.byExpert.map((ps) => ps.length));
    const xs = new Float32Array(E * M * H);
    b.byExpert.forEach((ps, e) => ps.forEach((p, j) => xs.set(rowOf(b, p), (e * M + j) * H)));
    const y = floatData((await graph.run({ x: f32(xs, [E, M, H]) })).y, 'batched', 'y');
    const out = new Float32Array(b.experts.length * H);
    b.byExpert.forEach((ps, e) => ps.forEach((p, j) => out.set(y.subarray((e * M + j) * H, (e * M + j + 1) * H), p * H)));
    return out;
  };
}

/** Best mean ms per call over 3 trials of cycling every batch twice (after a warm-up pass). */
async function timeCalls(run: Candidate, cases: readonly Batch[]): Promise<number> {
  for (const c of cases) await run(c);
  let best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    const t0 = performance.now();
    for (let round = 0; round < 2; round++) for (const c of cases) await run(c);
    best = Math.min(best, (performance.now() - t0) / (2 * cases.length));
  }
  return best;
}

const rows: { layout: string; batch: number; ms: number; maxAbsDiffFromLayer: number }[] = [];
const layerOutputs = new Map<number, Float32Array>();
for (const [layout, make] of [['layer', layerGraph], ['moe', moeOperator], ['batched', batchedMatMul]] as const) {
  const run = await make();
  for (const T of batches) {
    const cases = Array.from({ length: ROUTINGS }, (_, i) => batchOf(T, 100 * T + i));
    const y = await run(cases[0]!);
    const want = layerOutputs.get(T) ?? (layerOutputs.set(T, y), y);
    const maxAbsDiffFromLayer = y.reduce((a, v, i) => Math.max(a, Math.abs(v - want[i]!)), 0);
    const row = { layout, batch: T, ms: await timeCalls(run, cases), maxAbsDiffFromLayer };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}
const report = { date: new Date().toISOString(), rows };
const out = values.out ?? join('bench', 'results', `expert-layout-candidates-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
