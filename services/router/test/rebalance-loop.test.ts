import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { MemoryRegistry, planImbalance, planPlacement, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { threadNice } from '@expertmesh/process-lifecycle';
import { RebalanceMetrics } from '@expertmesh/telemetry';
import { ExpertLoadWindow, expertLoadFromMetrics, Rebalancer } from '../src/index.js';
import { WARM_UP_PLANS } from '../src/rebalance/rebalancer.js';

const config = parseModelConfig(getPreset('demo').config);
const E = config.nRoutedExperts;

describe('expert load window', () => {
  it('counts tokens per expert and lets them age out of the window', () => {
    let now = 0;
    const w = new ExpertLoadWindow(config.moeLayers, E, 10_000, 10, () => now);
    const layer = config.moeLayers[0]!;
    w.add(layer, Int32Array.from([3, 3, 5]));
    now = 6_000;
    w.add(layer, Int32Array.from([3]));
    expect(w.snapshot().get(layer)!.slice(0, 6)).toEqual([0, 0, 0, 3, 0, 1]);
    expect(w.total()).toBe(4);
    // The first tokens are older than the window now; the later one is not.
    now = 12_500;
    expect(w.snapshot().get(layer)![3]).toBe(1);
    now = 100_000;
    expect(w.total()).toBe(0);
    // Layers that are not MoE layers and ids beyond the model are ignored.
    w.add(0, Int32Array.from([1]));
    w.add(layer, Int32Array.from([E + 5, -1]));
    expect(w.total()).toBe(0);
  });

  it('is read back from a router metrics text: the window gauge before the since-start counter', () => {
    const text = [
      '# HELP expertmesh_expert_tokens_total x',
      'expertmesh_expert_tokens_total{layer="1",expert="2"} 900',
      'expertmesh_expert_window_tokens{layer="1",expert="2"} 40',
      'expertmesh_expert_window_tokens{layer="2",expert="7"} 5',
      'expertmesh_expert_window_tokens{layer="2",expert="999"} 5',
      'expertmesh_expert_window_tokens{layer="2",expert="8"} NaN',
    ].join('\n');
    const load = expertLoadFromMetrics(text, { maxLayer: 3, experts: E });
    expect(load.get(1)![2]).toBe(40);
    expect(load.get(2)![7]).toBe(5);
    expect(load.get(2)![8]).toBe(0);
    expect(expertLoadFromMetrics('expertmesh_expert_tokens_total{layer="1",expert="2"} 900', { maxLayer: 3, experts: E }).get(1)![2]).toBe(900);
    expect(() => expertLoadFromMetrics('up 1', { maxLayer: 3, experts: E })).toThrow(/no expertmesh_expert_window_tokens/);
  });
});

describe('rebalancer (closed loop)', () => {
  const slots = ['a', 'b', 'c', 'd'];
  const plan = planPlacement({ config, modelFingerprint: 'fp', version: 1, slots, bytesPerExpert: 1 });
  // The hot experts all on slot a.
  const hot = plan.shards.a!.find((l) => l.layer === config.moeLayers[0])!.experts.slice(0, 4);
  const cold = Array.from({ length: E }, (_, e) => e).filter((e) => !hot.includes(e));

  /** `current`: the plan in force (default: `plan`, one copy of each expert); shards report 1000 bytes per expert. */
  const setUp = async (threshold: number, current: PlacementPlan = plan) => {
    const registry = new MemoryRegistry();
    await registry.putPlan(current);
    const regs = await Promise.all(
      slots.map((slot, i) => {
        const record: ShardRecord = { shardId: slot, address: `127.0.0.1:${6000 + i}`, modelFingerprint: 'fp', layers: current.shards[slot]!, computeDtype: 'float32', weightBytes: current.shards[slot]!.reduce((a, l) => a + l.experts.length, 0) * 1000, health: 'SERVING', planVersion: 1, slot };
        return registry.registerShard(record, 30);
      }),
    );
    const window = new ExpertLoadWindow(config.moeLayers, E, 60_000);
    for (const layer of config.moeLayers) {
      for (let t = 0; t < 200; t++) window.add(layer, Int32Array.from([...hot, ...[7, 11, 13, 17].map((k) => cold[(t * k) % cold.length]!)]));
    }
    const prom = new Registry();
    const metrics = new RebalanceMetrics(prom, () => window.snapshot());
    const events: unknown[] = [];
    const rebalancer = new Rebalancer(registry, { config, fingerprint: 'fp' }, window, metrics, { intervalMs: 60_000, threshold, minTokens: 100, switchTimeoutMs: 2_000 }, (e) => events.push(e));
    return { registry, regs, rebalancer, prom, events, window, current };
  };

  it('stores a balanced plan when the measured imbalance passes the threshold, with its metrics', async () => {
    const { registry, regs, rebalancer, prom } = await setUp(1.2);
    const event = (await rebalancer.check())!;
    const stored = (await registry.getPlan())!;
    expect(stored.version).toBe(2);
    expect(event.imbalanceBefore).toBeGreaterThan(1.5);
    expect(event.imbalanceAfter).toBeLessThan(1.2);
    expect(event.movedExperts).toBeGreaterThan(0);
    // Bytes per expert as the shards' records report them (1000).
    expect(event.movedBytes).toBe(event.movedExperts * 1000);
    // The plan remembers the load it was made for.
    expect(stored.basis?.expertLoad?.[String(config.moeLayers[0])]![hot[0]!]).toBe(200);
    expect(Math.max(...planImbalance(stored, config, (l, e) => stored.basis!.expertLoad![String(l)]![e]!).values())).toBeLessThan(1.2);
    // The shards never reported v2 here: the switch timed out, and no switch time was observed.
    expect(event.switchMs).toBeNull();
    const text = await prom.metrics();
    expect(text).toMatch(/expertmesh_rebalances_total 1/);
    expect(text).toMatch(new RegExp(`expertmesh_rebalance_bytes_moved_total ${event.movedBytes}`));
    expect(text).toMatch(/expertmesh_expert_imbalance_ratio\{layer="\d+",phase="after"\} 1\.[01]/);
    expect(text).toMatch(/expertmesh_expert_window_tokens\{layer="\d+",expert="\d+"\} 200/);
    for (const r of regs) await r.close();
  });

  it('leaves the plan alone below the threshold, and when the window holds too few tokens', async () => {
    const { registry, regs, rebalancer } = await setUp(100);
    expect(await rebalancer.check()).toBeNull();
    expect((await registry.getPlan())!.version).toBe(1);
    for (const r of regs) await r.close();
    const few = await setUp(1.2);
    const quiet = new Rebalancer(few.registry, { config, fingerprint: 'fp' }, new ExpertLoadWindow(config.moeLayers, E, 60_000), new RebalanceMetrics(new Registry(), () => new Map()), { intervalMs: 60_000, threshold: 1.2, minTokens: 100 });
    expect(await quiet.check()).toBeNull();
    for (const r of few.regs) await r.close();
  });

  it('one interval: a dead-slot check that fails is logged, and the load is still weighed', async () => {
    const { registry, regs, rebalancer } = await setUp(1.2);
    rebalancer.checkDeadSlots = () => Promise.reject(new Error('a plan without d: the shards left cannot hold its experts'));
    const lines: string[] = [];
    await rebalancer.tick((line) => lines.push(line));
    expect(lines.join('')).toMatch(/^\[rebalance\] a plan without d: the shards left cannot hold its experts/);
    expect((await registry.getPlan())!.version).toBe(2);
    for (const r of regs) await r.close();
  });

  it('times the switch: done once every slot of the new plan reports it', async () => {
    const { registry, regs, rebalancer, prom } = await setUp(1.2);
    const checking = rebalancer.check();
    // The shards switch (as real ones do after loading): each record reports the new plan.
    let next = await registry.getPlan();
    while (next!.version !== 2) {
      await new Promise((r) => setTimeout(r, 10));
      next = await registry.getPlan();
    }
    await Promise.all(regs.map((r, i) => r.update({ shardId: slots[i]!, address: `127.0.0.1:${6000 + i}`, modelFingerprint: 'fp', layers: next!.shards[slots[i]!]!, computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion: 2, slot: slots[i]! })));
    const event = (await checking)!;
    expect(event.switchMs).not.toBeNull();
    expect(await prom.metrics()).toMatch(/expertmesh_rebalance_switch_seconds_count 1/);
    for (const r of regs) await r.close();
  });

  it('waits for the switch on a records watch: no read of the records while the shards switch', async () => {
    const { registry, regs, window } = await setUp(1.2);
    let reads = 0;
    let deliveries = 0;
    // Counted on the registry itself: the rebalancer's plan writes must reach the same store the test reads.
    const list = registry.listShards.bind(registry);
    const watch = registry.watchShards.bind(registry);
    registry.listShards = () => (reads++, list());
    registry.watchShards = (listener, options) => watch((...args) => (deliveries++, listener(...args)), options);
    const rebalancer = new Rebalancer(registry, { config, fingerprint: 'fp' }, window, new RebalanceMetrics(new Registry(), () => window.snapshot()), { intervalMs: 60_000, threshold: 1.2, minTokens: 100, switchTimeoutMs: 10_000 });
    const checking = rebalancer.check();
    let next = await registry.getPlan();
    while (next!.version !== 2) {
      await new Promise((r) => setTimeout(r, 10));
      next = await registry.getPlan();
    }
    // Waiting for the shards now: on a watch (its first delivery), or reading the records again.
    while (deliveries === 0 && reads < 2) await new Promise((r) => setTimeout(r, 10));
    const readsWhenWaiting = reads;
    // The shards switch one after the other, as real ones do.
    for (const [i, r] of regs.entries()) {
      const seen = deliveries;
      await r.update({ shardId: slots[i]!, address: `127.0.0.1:${6000 + i}`, modelFingerprint: 'fp', layers: next!.shards[slots[i]!]!, computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion: 2, slot: slots[i]! });
      while (deliveries === seen && reads < 2) await new Promise((r) => setTimeout(r, 10));
    }
    const event = (await checking)!;
    expect(event.switchMs).not.toBeNull();
    // The watch's first delivery and one per shard switching; no read of the records meanwhile.
    expect(deliveries).toBeGreaterThan(regs.length);
    expect(reads).toBe(readsWhenWaiting);
    for (const r of regs) await r.close();
  });

  it("warms its planner when the loop starts: plans of the model's shape in the lowest-priority thread, nothing stored", async () => {
    const { registry, regs, rebalancer } = await setUp(1.2);
    expect(rebalancer.planner.plansMade).toBe(0);
    rebalancer.start();
    try {
      // Waits for the condition (the warm-up plan answered), however busy the machine.
      while (rebalancer.planner.plansMade < WARM_UP_PLANS || rebalancer.planner.busy) await new Promise((r) => setTimeout(r, 10));
      expect(rebalancer.planner.plansMade).toBe(WARM_UP_PLANS);
      expect(threadNice(rebalancer.planner.thread!.tid)).toBe(19);
      // The warm-up's plan is thrown away: the registry still holds the first plan.
      expect((await registry.getPlan())!.version).toBe(1);
      // The loop's own look then plans as before (the interval is a minute: asked directly).
      expect((await rebalancer.check())!.version).toBe(2);
    } finally {
      await rebalancer.stop();
      for (const r of regs) await r.close();
    }
  });

  describe('within the memory budget of the plan in force (as `expertmesh plan` plans)', () => {
    const L = config.moeLayers.length;
    /** Bytes of experts a shard holds under `p`, at the 1000 bytes per expert the shards report. */
    const held = (p: PlacementPlan, slot: string): number => p.shards[slot]!.reduce((a, l) => a + l.experts.length, 0) * 1000;
    /** The plan in force: 8 redundant copies per layer, and a budget (stored with it) of `budget` bytes per shard. */
    const withCopies = (budget: number): PlacementPlan => ({ ...planPlacement({ config, modelFingerprint: 'fp', version: 1, slots, redundantExperts: 8, bytesPerExpert: 1000 }), basis: { shardMemoryBytes: budget } });

    it('gives up redundant copies that no longer fit (the most that do), logs and counts it, and never stores a plan over the budget', async () => {
      // Each shard's share of the experts once, and room for 2 copies per layer over all shards: not for 8.
      const budget = (L * (E / 4) + Math.floor((2 * L) / 4)) * 1000;
      const { registry, regs, rebalancer, prom, current } = await setUp(1.2, withCopies(budget));
      // The copies of the plan in force are more than the budget now holds (as when shards hold a larger format than planned).
      expect(Math.max(...slots.map((s) => held(current, s)))).toBeGreaterThan(budget);
      const lines: string[] = [];
      const event = (await rebalancer.check((line) => lines.push(line)))!;
      const stored = (await registry.getPlan())!;
      expect(stored.version).toBe(2);
      for (const s of slots) expect(held(stored, s)).toBeLessThanOrEqual(budget);
      expect(stored.basis?.shardMemoryBytes).toBe(budget);
      expect(event.redundantAsked).toBe(8);
      expect(event.redundantExperts).toBeGreaterThan(0);
      expect(event.redundantExperts).toBeLessThan(8);
      expect(event.imbalanceAfter).toBeLessThan(event.imbalanceBefore);
      expect(lines.join('')).toContain(`[rebalance] plan v2: 8 redundant experts per layer do not fit the memory budget (${(budget / 2 ** 20).toFixed(1)} MiB per shard): it gives ${event.redundantExperts}`);
      expect(await prom.metrics()).toMatch(new RegExp(`expertmesh_rebalance_redundant_dropped_total ${8 - event.redundantExperts}\\n`));
      for (const r of regs) await r.close();
    });

    it('stores nothing when not even one copy of each expert fits: the plan in force stays, the reason is logged and counted', async () => {
      const budget = (L * (E / 4) - 1) * 1000;
      const { registry, regs, rebalancer, prom } = await setUp(1.2, withCopies(budget));
      const lines: string[] = [];
      expect(await rebalancer.check((line) => lines.push(line))).toBeNull();
      expect((await registry.getPlan())!.version).toBe(1);
      expect(lines.join('')).toMatch(/^\[rebalance\] no plan stored \(plan v1 stays in force\): .*budget.*add shards, add memory/);
      const text = await prom.metrics();
      expect(text).toMatch(/expertmesh_rebalance_skipped_total\{reason="over_budget"\} 1\n/);
      expect(text).toMatch(/expertmesh_rebalances_total 0\n/);
      // The next look says it again (the load is still skewed), and still stores nothing.
      await rebalancer.tick((line) => lines.push(line));
      expect((await registry.getPlan())!.version).toBe(1);
      expect(await prom.metrics()).toMatch(/expertmesh_rebalance_skipped_total\{reason="over_budget"\} 2\n/);
      for (const r of regs) await r.close();
    });
  });
});
