import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { planImbalance, planPlacement, planProblem, PlacementPlanError, replan, replanWithinBudget, type PlacementPlan } from '../src/index.js';

const demo = parseModelConfig(getPreset('demo').config);
const E = demo.nRoutedExperts;
const slots = (n: number, prefix = 'shard-'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const experts = (plan: PlacementPlan, slot: string, layer: number): number[] => plan.shards[slot]!.find((l) => l.layer === layer)!.experts;
const maxImbalance = (plan: PlacementPlan, load: (l: number, e: number) => number): number => Math.max(...planImbalance(plan, demo, load).values());
/** Copies a shard of `next` holds that it did not hold in `prev`. */
const movedBetween = (prev: PlacementPlan, next: PlacementPlan): number =>
  Object.entries(next.shards).reduce((a, [slot, layers]) => a + layers.reduce((b, l) => b + l.experts.filter((e) => !(prev.shards[slot]?.find((p) => p.layer === l.layer)?.experts.includes(e) ?? false)).length, 0), 0);

/** A few experts take most tokens, as in real traffic. */
const skewed = (hot: readonly number[], weight = 40) => (_layer: number, e: number): number => (hot.includes(e) ? weight : 1);

describe('rebalance planner', () => {
  it('re-planning with the load unchanged moves nothing', () => {
    const load = skewed([3, 9]);
    const first = replan({ config: demo, modelFingerprint: 'f', version: 1, current: null, slots: slots(4), expertLoad: load, redundantExperts: 4, bytesPerExpert: 10 }).plan;
    const again = replan({ config: demo, modelFingerprint: 'f', version: 2, current: first, slots: slots(4), expertLoad: load, bytesPerExpert: 10 });
    expect(again.movedExperts).toBe(0);
    expect(again.movedBytes).toBe(0);
    expect(again.plan.shards).toEqual(first.shards);
  });

  it('gives the hot experts the redundant copies and evens out tokens per shard, moving few experts, with bytes moved reported', () => {
    const uniform = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(4), bytesPerExpert: 1 });
    // The four hottest experts all on one shard.
    const hot = experts(uniform, 'shard-0', demo.moeLayers[0]!).slice(0, 4);
    const load = skewed(hot);
    const before = maxImbalance(uniform, load);
    const r = replan({ config: demo, modelFingerprint: 'f', version: 2, current: uniform, slots: slots(4), expertLoad: load, redundantExperts: 8, bytesPerExpert: 1000 });
    const after = maxImbalance(r.plan, load);
    expect(before).toBeGreaterThan(1.5);
    expect(after).toBeLessThan(1.1);
    for (const layer of demo.moeLayers) {
      for (const e of hot) expect(slots(4).filter((s) => experts(r.plan, s, layer).includes(e)).length).toBe(3);
    }
    // Eight new copies per layer must be loaded somewhere; moves beyond them stay a small part of the layer.
    expect(r.movedExperts).toBe(movedBetween(uniform, r.plan));
    expect(r.movedExperts).toBeGreaterThanOrEqual(8 * demo.moeLayers.length);
    expect(r.movedExperts).toBeLessThan((E / 2) * demo.moeLayers.length);
    expect(r.movedBytes).toBe(r.movedExperts * 1000);
    expect(planProblem(r.plan, demo, 'f')).toBeNull();
  });

  it('a joining shard gets work, and only about its share of experts moves', () => {
    const three = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(3), bytesPerExpert: 1 });
    const r = replan({ config: demo, modelFingerprint: 'f', version: 2, current: three, slots: [...slots(3), 'joined'], bytesPerExpert: 1 });
    for (const layer of demo.moeLayers) {
      const counts = [...slots(3), 'joined'].map((s) => experts(r.plan, s, layer).length);
      expect(Math.min(...counts)).toBeGreaterThanOrEqual(E / 4 - 1);
      expect(Math.max(...counts)).toBeLessThanOrEqual(Math.ceil(E / 4 * 1.05));
    }
    // Only the joiner loads anything: the others keep what they held.
    expect(r.movedExperts).toBe(r.plan.shards.joined!.reduce((a, l) => a + l.experts.length, 0));
  });

  it('a leaving shard: its experts, and only those, move to the others', () => {
    const four = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(4), redundantExperts: 2, bytesPerExpert: 1 });
    const r = replan({ config: demo, modelFingerprint: 'f', version: 2, current: four, slots: slots(3), bytesPerExpert: 1 });
    const leaverHeld = four.shards['shard-3']!.reduce((a, l) => a + l.experts.length, 0);
    expect(r.movedExperts).toBeLessThanOrEqual(leaverHeld);
    expect(planProblem(r.plan, demo, 'f')).toBeNull();
    for (const s of slots(3)) for (const l of four.shards[s]!) for (const e of l.experts) expect(experts(r.plan, s, l.layer)).toContain(e);
  });

  it('honours the memory budget in the bytes shards hold, or says what to change', () => {
    const perExpert = 3 * 2 ** 20;
    const fits = Math.ceil((E * demo.moeLayers.length) / 3) * perExpert;
    const current = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(3), bytesPerExpert: perExpert });
    const r = replan({ config: demo, modelFingerprint: 'f', version: 2, current, slots: slots(3), expertLoad: skewed([1, 2]), bytesPerExpert: perExpert, memoryBudgetBytes: fits });
    for (const s of slots(3)) expect(r.plan.shards[s]!.reduce((a, l) => a + l.experts.length, 0) * perExpert).toBeLessThanOrEqual(fits);
    expect(() => replan({ config: demo, modelFingerprint: 'f', version: 2, current, slots: slots(2), bytesPerExpert: perExpert, memoryBudgetBytes: fits })).toThrow(PlacementPlanError);
  });

  it('within a budget, gives up redundant copies (the most that fit, hottest experts first) before giving up', () => {
    const held = (plan: PlacementPlan, s: string): number => plan.shards[s]!.reduce((a, l) => a + l.experts.length, 0);
    const L = demo.moeLayers.length;
    const asked = { config: demo, modelFingerprint: 'f', version: 1, current: null, slots: slots(4), expertLoad: skewed([5]), redundantExperts: 8, bytesPerExpert: 1 };
    // Room for the experts once and 2 more copies per layer on each shard's share: not for 8.
    const budget = L * (E / 4) + Math.floor((2 * L) / 4);
    const r = replanWithinBudget({ ...asked, memoryBudgetBytes: budget });
    expect(r.redundantAsked).toBe(8);
    expect(r.redundantExperts).toBeGreaterThan(0);
    expect(r.redundantExperts).toBeLessThan(8);
    for (const s of slots(4)) expect(held(r.plan, s)).toBeLessThanOrEqual(budget);
    expect(planProblem(r.plan, demo, 'f')).toBeNull();
    // One copy more than it gives does not fit.
    expect(() => replan({ ...asked, redundantExperts: r.redundantExperts + 1, memoryBudgetBytes: budget })).toThrow(PlacementPlanError);
    for (const layer of demo.moeLayers) expect(Object.values(r.plan.shards).filter((ls) => ls.find((l) => l.layer === layer)!.experts.includes(5)).length).toBe(Math.min(4, 1 + r.redundantExperts));
    // What fits is kept as asked; not even one copy each is an error that says what to do.
    expect(replanWithinBudget({ ...asked, memoryBudgetBytes: L * E }).redundantExperts).toBe(8);
    expect(() => replanWithinBudget({ ...asked, memoryBudgetBytes: L * (E / 4) - 1 })).toThrow(/add shards, add memory/);
  });

  it('for any load, slots and copies: every expert held, no slot holds one twice, copies add up', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 12 }),
        fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: E, maxLength: E }),
        (nBefore, nAfter, redundant, weights) => {
          const r0 = Math.min(redundant, E * (nBefore - 1));
          const r1 = Math.min(redundant, E * (nAfter - 1));
          const load = (_l: number, e: number): number => weights[e]!;
          const current = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(nBefore), redundantExperts: r0, bytesPerExpert: 1 });
          const next = replan({ config: demo, modelFingerprint: 'f', version: 2, current, slots: slots(nAfter), expertLoad: load, redundantExperts: r1, bytesPerExpert: 1 }).plan;
          expect(planProblem(next, demo, 'f')).toBeNull();
          for (const layer of demo.moeLayers) {
            const all = slots(nAfter).flatMap((s) => experts(next, s, layer));
            expect(all.length).toBe(E + r1);
            for (const s of slots(nAfter)) expect(new Set(experts(next, s, layer)).size).toBe(experts(next, s, layer).length);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
