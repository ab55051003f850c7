import { describe, expect, it } from 'vitest';
import { MemoryRegistry, planPlacement, redundantCopies, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { DeadSlots } from '../src/index.js';

const config = parseModelConfig(getPreset('demo').config);
const E = config.nRoutedExperts;
const slots = ['a', 'b', 'c', 'd'];
const BYTES = 1000;

const record = (plan: PlacementPlan, slot: string): ShardRecord => ({
  shardId: slot,
  address: `127.0.0.1:${6000 + slots.indexOf(slot)}`,
  modelFingerprint: 'fp',
  layers: plan.shards[slot]!,
  computeDtype: 'float32',
  weightBytes: plan.shards[slot]!.reduce((a, l) => a + l.experts.length, 0) * BYTES,
  health: 'SERVING',
  planVersion: plan.version,
  slot,
});

/** Per layer, how many slots of `plan` hold each expert. */
const holders = (plan: PlacementPlan, layer: number): number[] => {
  const n = new Array<number>(E).fill(0);
  for (const layers of Object.values(plan.shards)) for (const e of layers.find((l) => l.layer === layer)?.experts ?? []) n[e]!++;
  return n;
};

describe('dead plan slots', () => {
  const setUp = async (shardMemoryBytes?: number) => {
    const base = planPlacement({ config, modelFingerprint: 'fp', version: 1, slots, redundantExperts: E / 2, bytesPerExpert: BYTES });
    const plan: PlacementPlan = { ...base, basis: { expertBytes: BYTES, ...(shardMemoryBytes ? { shardMemoryBytes } : {}) } };
    const registry = new MemoryRegistry();
    await registry.putPlan(plan);
    // Slot d's shard is gone (killed, its lease run out): only a, b and c claim their slots.
    const regs = await Promise.all(['a', 'b', 'c'].map((s) => registry.registerShard(record(plan, s), 30)));
    let now = 0;
    const dead = new DeadSlots(registry, config, 10_000, () => now);
    return { registry, regs, plan, dead, at: (t: number) => (now = t) };
  };

  it('a slot no live shard claims for the grace is dropped: its experts re-homed, every replica kept', async () => {
    const { registry, regs, plan, dead, at } = await setUp();
    expect(await dead.check()).toBeNull();
    at(9_999);
    expect(await dead.check()).toBeNull();
    expect((await registry.getPlan())!.version).toBe(1);
    at(10_000);
    const dropped = (await dead.check())!;
    expect(dropped.slots).toEqual(['d']);
    const stored = (await registry.getPlan())!;
    expect(stored.version).toBe(2);
    expect(Object.keys(stored.shards).sort()).toEqual(['a', 'b', 'c']);
    // Redundancy restored: every expert held, and as many copies as before.
    expect(dropped.redundantExperts).toBe(redundantCopies(plan, config));
    expect(redundantCopies(stored, config)).toBe(redundantCopies(plan, config));
    for (const layer of config.moeLayers) {
      expect(Math.min(...holders(stored, layer))).toBeGreaterThanOrEqual(1);
      expect(holders(stored, layer).reduce((a, b) => a + b, 0)).toBe(holders(plan, layer).reduce((a, b) => a + b, 0));
    }
    // The live shards keep what they held: only d's copies move.
    const dCopies = plan.shards.d!.reduce((a, l) => a + l.experts.length, 0);
    expect(dropped.movedExperts).toBeLessThanOrEqual(dCopies + config.moeLayers.length * 2);
    expect(dropped.movedBytes).toBe(dropped.movedExperts * BYTES);
    expect(stored.basis).toEqual(plan.basis);
    for (const r of regs) await r.close();
  });

  it('a slot claimed again within the grace (a restart) is kept, and judged afresh when it goes again', async () => {
    const { registry, regs, plan, dead, at } = await setUp();
    expect(await dead.check()).toBeNull();
    at(5_000);
    const back = await registry.registerShard(record(plan, 'd'), 30);
    expect(await dead.check()).toBeNull();
    await back.close();
    at(12_000);
    expect(await dead.check()).toBeNull();
    at(21_999);
    expect(await dead.check()).toBeNull();
    at(22_000);
    expect((await dead.check())!.slots).toEqual(['d']);
    for (const r of regs) await r.close();
  });

  it('within a memory budget that cannot hold every replica on fewer shards: every expert held, fewer replicas', async () => {
    const perShard = plan0CopiesPerShard();
    // Room for exactly what each of four shards holds now: three cannot hold all the copies again.
    const { registry, regs, plan, dead, at } = await setUp(perShard * BYTES);
    await dead.check();
    at(10_000);
    const dropped = (await dead.check())!;
    const stored = (await registry.getPlan())!;
    expect(dropped.redundantExperts).toBeLessThan(redundantCopies(plan, config));
    for (const layer of config.moeLayers) expect(Math.min(...holders(stored, layer))).toBeGreaterThanOrEqual(1);
    for (const layers of Object.values(stored.shards)) expect(layers.reduce((a, l) => a + l.experts.length, 0) * BYTES).toBeLessThanOrEqual(perShard * BYTES);
    for (const r of regs) await r.close();
  });

  it('leaves the plan alone when every slot is claimed, and never drops the last slot', async () => {
    const { registry, regs, plan, dead, at } = await setUp();
    const d = await registry.registerShard(record(plan, 'd'), 30);
    await dead.check();
    at(60_000);
    expect(await dead.check()).toBeNull();
    for (const r of [...regs, d]) await r.close();
    await dead.check();
    at(120_000);
    expect(await dead.check()).toBeNull();
    expect((await registry.getPlan())!.version).toBe(1);
  });
});

/** Expert copies per shard of the four-slot plan with E/2 replicas per layer (the most of any shard). */
function plan0CopiesPerShard(): number {
  const plan = planPlacement({ config, modelFingerprint: 'fp', version: 1, slots, redundantExperts: E / 2, bytesPerExpert: BYTES });
  return Math.max(...Object.values(plan.shards).map((ls) => ls.reduce((a, l) => a + l.experts.length, 0)));
}
