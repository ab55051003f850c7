import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { planImbalance, planPlacement, planProblem, redundantCopies, replan, replanMembers, replanMembership, replanWithout, type PlacementPlan, type ShardRecord } from '../src/index.js';

const demo = parseModelConfig(getPreset('demo').config);
const E = demo.nRoutedExperts;
const L = demo.moeLayers.length;
const slots = (n: number): string[] => Array.from({ length: n }, (_, i) => `shard-${i}`);
const experts = (plan: PlacementPlan, slot: string, layer: number): readonly number[] => plan.shards[slot]?.find((l) => l.layer === layer)?.experts ?? [];
const total = (plan: PlacementPlan, slot: string): number => plan.shards[slot]!.reduce((a, l) => a + l.experts.length, 0);
/** Copies slot holds in `next` that it did not hold in `prev`. */
const gained = (prev: PlacementPlan, next: PlacementPlan, slot: string): number =>
  next.shards[slot]!.reduce((a, l) => a + l.experts.filter((e) => !experts(prev, slot, l.layer).includes(e)).length, 0);
/** Per layer, how many slots hold each expert. */
const holders = (plan: PlacementPlan, layer: number): number[] => {
  const n = new Array<number>(E).fill(0);
  for (const slot of Object.keys(plan.shards)) for (const e of experts(plan, slot, layer)) n[e]!++;
  return n;
};
const worst = (plan: PlacementPlan, load: (l: number, e: number) => number): number => Math.max(...planImbalance(plan, demo, load).values());
/** The bench's shape: four hot experts, the rest warm by a little, different per layer. */
const hot = (weight: number) => (layer: number, e: number): number => ([0, 4, 8, 12].includes(e) ? weight : 1) * (1 + ((e * 7 + layer * 3) % 5) / 10);
/** The plan the closed loop makes from the first (uniform) one under `load`. */
const rebalanced = (n: number, load: (l: number, e: number) => number, redundantExperts = 0): PlacementPlan => {
  const first = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(n), redundantExperts, bytesPerExpert: 1 });
  return replan({ config: demo, modelFingerprint: 'f', version: 2, current: first, slots: slots(n), expertLoad: load, bytesPerExpert: 1 }).plan;
};
const withLoad = (plan: PlacementPlan, load: (l: number, e: number) => number, extra: NonNullable<PlacementPlan['basis']> = {}): PlacementPlan => ({
  ...plan,
  basis: { ...extra, expertLoad: Object.fromEntries(demo.moeLayers.map((layer) => [String(layer), Array.from({ length: E }, (_, e) => load(layer, e))])) },
});
const recordsOf = (plan: PlacementPlan, bytes: number): ShardRecord[] =>
  Object.entries(plan.shards).map(([slot, layers], i) => ({ shardId: slot, address: `127.0.0.1:${7000 + i}`, modelFingerprint: 'f', layers, computeDtype: 'float32', weightBytes: layers.reduce((a, l) => a + l.experts.length, 0) * bytes, health: 'SERVING', planVersion: plan.version, slot }));

/** Loads and redundant copies the join and leave tests run on: skew without replicas, mild and strong skew with 8 per layer. */
const SHAPES = [[6, 0], [3, 8], [10, 8]] as const;
/** From the closed loop's plan of `from` slots under the shape's load, the membership re-plan to `to` slots (soundness checked). */
const change = ([weight, redundant]: (typeof SHAPES)[number], from: number, to: number) => {
  const load = hot(weight);
  const current = rebalanced(from, load, redundant);
  const r = replanMembership({ config: demo, version: 3, current, slots: slots(to), expertLoad: load, bytesPerExpert: 10 });
  expectSound(current, r.plan);
  return { load, current, r };
};

/** What every membership plan keeps: each expert held, nobody holding one twice, shards that stay lose only what they give. */
function expectSound(prev: PlacementPlan, next: PlacementPlan): void {
  expect(planProblem(next, demo, prev.modelFingerprint)).toBeNull();
  for (const layer of demo.moeLayers) {
    expect(Math.min(...holders(next, layer))).toBeGreaterThanOrEqual(1);
    for (const slot of Object.keys(next.shards)) expect(new Set(experts(next, slot, layer)).size).toBe(experts(next, slot, layer).length);
  }
}

describe('membership re-plans: only the member\'s experts move', () => {
  it('a join: the new slot takes experts from the busiest shards, no serving shard loads any, every copy kept', () => {
    for (const shape of SHAPES) {
      const { load, current, r } = change(shape, 4, 5);
      for (const s of slots(4)) expect(gained(current, r.plan, s)).toBe(0);
      const joined = total(r.plan, 'shard-4');
      expect(joined).toBeGreaterThan(0);
      expect(r.movedExperts).toBe(joined);
      expect(r.movedBytes).toBe(joined * 10);
      // A join moves copies, it does not add or drop any.
      for (const layer of demo.moeLayers) expect(holders(r.plan, layer)).toEqual(holders(current, layer));
      // The new slot's share of the load: the worst layer is more even than the four shards' plan spread over five.
      const asIs: PlacementPlan = { ...current, shards: { ...current.shards, 'shard-4': demo.moeLayers.map((layer) => ({ layer, experts: [] })) } };
      expect(worst(r.plan, load)).toBeLessThan(worst(asIs, load));
      expect(worst(r.plan, load)).toBeLessThan(1.3);
    }
  });

  it('a join under uniform load evens the experts held: the busiest give first, each as much as the others', () => {
    const current = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(3), bytesPerExpert: 1 });
    const r = replanMembership({ config: demo, version: 2, current, slots: [...slots(3), 'joined'], bytesPerExpert: 1 });
    expectSound(current, r.plan);
    for (const layer of demo.moeLayers) {
      const counts = [...slots(3), 'joined'].map((s) => experts(r.plan, s, layer).length);
      expect(Math.min(...counts)).toBeGreaterThanOrEqual(E / 4 - 1);
      expect(Math.max(...counts)).toBeLessThanOrEqual(Math.ceil((E / 4) * 1.05));
    }
    expect(r.movedExperts).toBe(total(r.plan, 'joined'));
  });

  it('a join within a tight memory budget: the new slot takes no more than its budget, the others keep theirs', () => {
    const load = hot(3);
    const current = rebalanced(4, load, 8);
    const budget = 20; // experts of every layer together, bytesPerExpert 1
    const r = replanMembership({ config: demo, version: 3, current, slots: slots(5), expertLoad: load, bytesPerExpert: 1, memoryBudgetBytes: budget });
    expectSound(current, r.plan);
    expect(total(r.plan, 'shard-4')).toBeGreaterThan(0);
    expect(total(r.plan, 'shard-4')).toBeLessThanOrEqual(budget);
    expect(r.movedExperts).toBe(total(r.plan, 'shard-4'));
    for (const s of slots(4)) expect(total(r.plan, s)).toBeLessThanOrEqual(total(current, s));
  });

  it('a leave: exactly the gone slot\'s copies move, each to a shard that lacks it; the others keep all they held', () => {
    for (const shape of SHAPES) {
      const { load, current, r } = change(shape, 5, 4);
      expect(r.movedExperts).toBe(total(current, 'shard-4'));
      for (const s of slots(4)) for (const l of current.shards[s]!) for (const e of l.experts) expect(experts(r.plan, s, l.layer)).toContain(e);
      // Every copy re-homed, except where the four shards left hold an expert already.
      for (const layer of demo.moeLayers) expect(holders(r.plan, layer)).toEqual(holders(current, layer).map((c) => Math.min(c, 4)));
      expect(redundantCopies(r.plan, demo)).toBe(redundantCopies(current, demo));
      expect(worst(r.plan, load)).toBeLessThan(1.3);
    }
  });

  it('a leave within a tight memory budget: every expert held and every budget kept, replicas given up (the coldest first), never an only copy', () => {
    const load = hot(10);
    const current = rebalanced(4, load, E / 2);
    const budget = Math.max(...slots(4).map((s) => total(current, s)));
    const r = replanMembership({ config: demo, version: 3, current, slots: slots(3), expertLoad: load, bytesPerExpert: 1, memoryBudgetBytes: budget });
    expectSound(current, r.plan);
    for (const s of slots(3)) expect(total(r.plan, s)).toBeLessThanOrEqual(budget);
    expect(redundantCopies(r.plan, demo)).toBeLessThan(redundantCopies(current, demo));
    // Nothing loads but the gone slot's experts; what a staying shard gives up is a replica.
    expect(r.movedExperts).toBeLessThanOrEqual(total(current, 'shard-3'));
    for (const s of slots(3)) {
      for (const l of current.shards[s]!) {
        for (const e of l.experts) if (!experts(r.plan, s, l.layer).includes(e)) expect(holders(r.plan, l.layer)[e]).toBeGreaterThanOrEqual(1);
      }
    }
    for (const layer of demo.moeLayers) {
      for (let e = 0; e < E; e++) {
        const gone = current.shards['shard-3']!.find((l) => l.layer === layer)!.experts.includes(e);
        // A copy the gone slot held is re-homed unless the others already hold it or there is no room.
        if (!gone) expect(holders(r.plan, layer)[e]).toBeLessThanOrEqual(holders(current, layer)[e]!);
      }
    }
    // The hot experts keep their copies before colder ones do.
    for (const layer of demo.moeLayers) {
      const copies = holders(r.plan, layer);
      expect(Math.min(...[0, 4, 8, 12].map((e) => copies[e]!))).toBeGreaterThanOrEqual(Math.max(...copies.filter((_, e) => ![0, 4, 8, 12].includes(e))));
    }
    expect(() => replanMembership({ config: demo, version: 3, current, slots: slots(2), expertLoad: load, bytesPerExpert: 1, memoryBudgetBytes: (E * L) / 2 - 1 })).toThrow(/add shards, add memory/);
  });

  it('a leave where the others already hold a replica: that copy is dropped, not doubled', () => {
    const three = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(3), redundantExperts: 2 * E, bytesPerExpert: 1 });
    const r = replanMembership({ config: demo, version: 2, current: three, slots: slots(2), bytesPerExpert: 1 });
    expectSound(three, r.plan);
    for (const layer of demo.moeLayers) expect(holders(r.plan, layer)).toEqual(new Array<number>(E).fill(2));
    expect(r.movedExperts).toBe(0);
  });

  it('the shards\' calls (replanMembers, replanWithout) on the bench\'s shape: a join loads only onto the new slot, a leave only the gone slot\'s experts', () => {
    const load = hot(6);
    const current = withLoad(rebalanced(4, load), load, { expertBytes: 100, shardMemoryBytes: 10_000 });
    const joined = replanMembers(demo, current, slots(5), recordsOf(current, 100));
    expect(joined.plan.version).toBe(current.version + 1);
    expect(joined.plan.basis).toEqual(current.basis);
    for (const s of slots(4)) expect(gained(current, joined.plan, s)).toBe(0);
    expect(joined.movedExperts).toBe(total(joined.plan, 'shard-4'));
    expect(joined.movedBytes).toBe(joined.movedExperts * 100);
    const left = replanWithout(demo, joined.plan, ['shard-4'], recordsOf(joined.plan, 100));
    expect(Object.keys(left.plan.shards)).toEqual(slots(4));
    expect(left.movedExperts).toBe(total(joined.plan, 'shard-4'));
    expect(left.redundantExperts).toBe(0);
    for (const s of slots(4)) for (const l of joined.plan.shards[s]!) for (const e of l.experts) expect(experts(left.plan, s, l.layer)).toContain(e);
  });

  it('for any load, slots, copies and budget: every expert held, no slot holds one twice, budgets kept, only joiners or the gone slots\' experts load', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 6 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 24 }),
        fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: E, maxLength: E }),
        fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }),
        (nBefore, join, redundant, weights, slack) => {
          const load = (_l: number, e: number): number => weights[e]!;
          const current = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(nBefore), redundantExperts: Math.min(redundant, E * (nBefore - 1)), expertLoad: load, bytesPerExpert: 1 });
          const after = join ? slots(nBefore + 1) : slots(nBefore - 1);
          const most = Math.max(...slots(nBefore).map((s) => total(current, s)));
          const budget = slack === undefined ? undefined : Math.max(most, Math.ceil((E * L) / after.length)) + slack;
          const r = replanMembership({ config: demo, version: 2, current, slots: after, expertLoad: load, bytesPerExpert: 1, ...(budget !== undefined ? { memoryBudgetBytes: budget } : {}) });
          expectSound(current, r.plan);
          if (budget !== undefined) for (const s of after) expect(total(r.plan, s)).toBeLessThanOrEqual(budget);
          const loaded = after.reduce((a, s) => a + (s in current.shards ? gained(current, r.plan, s) : total(r.plan, s)), 0);
          expect(r.movedExperts).toBe(loaded);
          if (join) {
            for (const s of slots(nBefore)) expect(gained(current, r.plan, s)).toBe(0);
            for (const layer of demo.moeLayers) expect(holders(r.plan, layer)).toEqual(holders(current, layer));
          } else {
            expect(r.movedExperts).toBeLessThanOrEqual(total(current, `shard-${nBefore - 1}`));
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
