import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import type { ExpertRouting } from '@expertmesh/routed-experts';
import { ExpertPlacement } from '../src/experts/expert-placement.js';
import { LayerDispatch, type RowTask } from '../src/experts/layer-dispatch.js';
import { NoHolderError } from '../src/experts/dispatch-errors.js';
import type { ShardConnection } from '../src/experts/shard-connection.js';
import type { ShardView } from '../src/experts/shard-source.js';

const config = parseModelConfig(getPreset('tiny').config); // 16 experts, 4 per token
const H = 24;
const layer = config.moeLayers[0]!;

let seed = 12345;
const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

/** A fixed expert output per (token, expert), with magnitudes that make float32 addition order visible. */
const expertOutput = (token: number, expert: number): Float32Array =>
  Float32Array.from({ length: H }, (_, c) => Math.sin(token * 7.1 + expert * 3.3 + c) * 10 ** ((expert + c) % 5));

/** What a shard answers for a row: its experts' weighted outputs added in ascending expert order, in float32. */
function answer(row: RowTask, bf16: boolean): void {
  const sum = new Float32Array(H);
  row.experts.forEach((e, j) => {
    const y = expertOutput(row.token, e);
    for (let c = 0; c < H; c++) sum[c] += Math.fround(y[c]! * row.weights[j]!);
  });
  if (bf16 && !row.part) {
    // The shard's bfloat16 encoder: round to nearest even.
    const bits = new Uint32Array(sum.buffer);
    for (let c = 0; c < H; c++) bits[c] = (bits[c]! + 0x7fff + ((bits[c]! >> 16) & 1)) & 0xffff0000;
  }
  row.result = sum;
  row.roundedToBf16 = bf16 && !row.part;
}

function routing(T: number): ExpertRouting {
  const k = config.numExpertsPerTok;
  const expertIds = new Int32Array(T * k);
  const weights = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const chosen = new Set<number>();
    while (chosen.size < k) chosen.add(Math.floor(rand() * config.nRoutedExperts));
    [...chosen].forEach((e, j) => {
      expertIds[t * k + j] = e;
      weights[t * k + j] = Math.fround(0.1 + rand());
    });
  }
  return { numTokens: T, topK: k, expertIds, weights };
}

/** n shards, every expert on `copies` of them. */
function view(n: number, copies: number): ShardView {
  const held: number[][] = Array.from({ length: n }, () => []);
  for (let e = 0; e < config.nRoutedExperts; e++) {
    const first = Math.floor(rand() * n);
    for (let c = 0; c < copies; c++) held[(first + c * (1 + (e % (n - 1 || 1)))) % n]!.push(e);
  }
  const shards = held.map((experts, s) => ({ address: `s${s}`, layers: config.moeLayers.map((l) => ({ layer: l, experts: [...new Set(experts)] })) }));
  const placement = ExpertPlacement.fromShards(config, shards, { allowMissing: true });
  return { connections: shards.map(() => ({}) as ShardConnection), placement };
}

/** Runs a layer: `down` shards are unusable from the start, `failing` ones fail their calls and have their rows moved. */
function run(v: ShardView, r: ExpertRouting, bf16: boolean, down: ReadonlySet<number>, failing: ReadonlySet<number>): Float32Array {
  const unusable = new Set(down);
  const d = LayerDispatch.plan(v, layer, r, (s) => !unusable.has(s));
  let pending = d.rows();
  while (pending.length) {
    const failed = pending.filter((row) => failing.has(row.shard));
    for (const row of pending) if (!failing.has(row.shard)) answer(row, bf16);
    for (const row of failed) unusable.add(row.shard);
    pending = failed.length ? d.replace(failed) : [];
  }
  return d.combine(r.numTokens, H, bf16 ? 'bfloat16' : 'float32');
}

describe('a layer dispatch', () => {
  for (const bf16 of [false, true]) {
    it(`gives bit-identical sums whichever shards fail or are down (${bf16 ? 'bfloat16' : 'float32'} combine)`, () => {
      let compared = 0;
      for (let trial = 0; trial < 20; trial++) {
        const n = 3 + (trial % 4);
        const v = view(n, 2);
        const r = routing(48);
        const baseline = run(v, r, bf16, new Set(), new Set());
        for (let s = 0; s < n; s++) {
          expect(run(v, r, bf16, new Set(), new Set([s]))).toEqual(baseline); // fails mid-step
          expect(run(v, r, bf16, new Set([s]), new Set())).toEqual(baseline); // known down before the step
          compared += 2;
        }
      }
      expect(compared).toBeGreaterThan(100);
    });
  }

  it('the sums are order-sensitive: adding the same experts in another grouping changes bits', () => {
    const v = view(4, 2);
    const r = routing(64);
    const baseline = run(v, r, false, new Set(), new Set());
    // Every expert on its own, added in top-k order: the same terms, other rounding.
    const naive = new Float32Array(r.numTokens * H);
    for (let t = 0; t < r.numTokens; t++) {
      for (let j = 0; j < r.topK; j++) {
        const y = expertOutput(t, r.expertIds[t * r.topK + j]!);
        for (let c = 0; c < H; c++) naive[t * H + c] += Math.fround(y[c]! * r.weights[t * r.topK + j]!);
      }
    }
    expect(naive).not.toEqual(baseline);
  });

  it('moves a failed shard whole groups to a replica holding them all, and sends each token once per group', () => {
    // s0 and s1 split the experts; s2 holds all: groups come from the plan [s0, s1] (reference), never from s2.
    const halves = [0, 1].map((s) => ({ address: `s${s}`, layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 8 }, (_, i) => i + 8 * s) })) }));
    const all = { address: 's2', layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 16 }, (_, i) => i) })) };
    const reference = ExpertPlacement.fromShards(config, halves);
    const placement = ExpertPlacement.fromShards(config, [...halves, all]);
    const v: ShardView = { connections: [0, 1, 2].map(() => ({}) as ShardConnection), placement, reference };
    const r = routing(32);
    let down = 2;
    const d = LayerDispatch.plan(v, layer, r, (s) => s !== down);
    const rows = d.rows();
    for (const row of rows) expect(row.experts.every((e) => (e < 8 ? 0 : 1) === row.shard)).toBe(true);
    const failed = rows.filter((row) => row.shard === 0);
    down = 0;
    const moved = d.replace(failed);
    // s1 lacks s0's experts, s2 has them all: every moved group goes to s2 whole.
    expect(moved.map((m) => m.shard)).toEqual(failed.map(() => 2));
    expect(moved.map((m) => m.experts)).toEqual(failed.map((f) => f.experts));
    expect(moved.every((m) => !m.part)).toBe(true);
  });

  it('says whether a shard\'s rows could move: every expert with another usable holder', () => {
    const halves = [0, 1].map((s) => ({ address: `s${s}`, layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 8 }, (_, i) => i + 8 * s) })) }));
    const low = { address: 's2', layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 8 }, (_, i) => i) })) };
    const v: ShardView = { connections: [0, 1, 2].map(() => ({}) as ShardConnection), placement: ExpertPlacement.fromShards(config, [...halves, low]) };
    const down = new Set<number>();
    const d = LayerDispatch.plan(v, layer, routing(16), (s) => !down.has(s));
    const rowsOf = (s: number): RowTask[] => d.rows().filter((row) => row.shard === s);
    // Experts 8-15 live on s1 alone; 0-7 on s0 and s2.
    expect(rowsOf(1).length).toBeGreaterThan(0);
    expect(d.movable(rowsOf(1), 1)).toBe(false);
    const low0 = rowsOf(0).length ? { rows: rowsOf(0), shard: 0 } : { rows: rowsOf(2), shard: 2 };
    expect(d.movable(low0.rows, low0.shard)).toBe(true);
    // The other holder unusable: nowhere to go.
    down.add(2 - low0.shard);
    expect(d.movable(low0.rows, low0.shard)).toBe(false);
  });

  it('sends rows of experts with two holders to the one not loading a new plan', () => {
    // s0 and s1 split the experts, s2 holds all: each group has two holders.
    const halves = [0, 1].map((s) => ({ address: `s${s}`, layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 8 }, (_, i) => i + 8 * s) })) }));
    const all = { address: 's2', layers: config.moeLayers.map((l) => ({ layer: l, experts: Array.from({ length: 16 }, (_, i) => i) })) };
    const placement = ExpertPlacement.fromShards(config, [...halves, all]);
    const reference = ExpertPlacement.fromShards(config, halves);
    const connections = [0, 1, 2].map(() => ({}) as ShardConnection);
    const r = routing(32);
    const shardsUsed = (switching?: ReadonlySet<number>): Set<number> => new Set(LayerDispatch.plan({ connections, placement, reference, ...(switching ? { switching } : {}) }, layer, r, () => true).rows().map((row) => row.shard));
    // Balanced over all three when none is loading.
    expect(shardsUsed()).toEqual(new Set([0, 1, 2]));
    expect(shardsUsed(new Set([2]))).toEqual(new Set([0, 1]));
    expect(shardsUsed(new Set([0]))).toEqual(new Set([1, 2]));
    // Both holders loading: the rows still go somewhere.
    expect(shardsUsed(new Set([0, 2])).has(1)).toBe(true);
  });

  for (const adopted of [true, false]) {
    it(`a hedge's alternatives avoid the late shard, and the sums are bit-identical whether they are adopted or not (${adopted ? 'adopted' : 'discarded'})`, () => {
      let compared = 0;
      for (let trial = 0; trial < 20; trial++) {
        const n = 3 + (trial % 4);
        const v = view(n, 2);
        const r = routing(48);
        const baseline = run(v, r, false, new Set(), new Set());
        for (let late = 0; late < n; late++) {
          const d = LayerDispatch.plan(v, layer, r, () => true);
          const rows = d.rows();
          const lateRows = rows.filter((row) => row.shard === late);
          if (!lateRows.length || !d.movable(lateRows, late)) continue;
          for (const row of rows) answer(row, false);
          const alternatives = d.alternatives(lateRows, late);
          const hedge = [...alternatives.values()].flat();
          expect(hedge.some((row) => row.shard === late)).toBe(false);
          for (const row of hedge) answer(row, false);
          if (adopted) d.adopt(alternatives);
          expect(d.combine(r.numTokens, H, 'float32')).toEqual(baseline);
          compared++;
        }
      }
      expect(compared).toBeGreaterThan(20);
    });
  }

  it('throws NoHolderError when an expert has no usable holder left', () => {
    const v = view(3, 1);
    const r = routing(8);
    const down = new Set<number>();
    const d = LayerDispatch.plan(v, layer, r, (s) => !down.has(s));
    const rows = d.rows();
    down.add(rows[0]!.shard);
    expect(() => d.replace(rows.filter((row) => row.shard === rows[0]!.shard))).toThrow(NoHolderError);
  });
});
