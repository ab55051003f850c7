import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePairs, encodeTensor, type RunExpertsRequest__Output, type Tensor__Output } from '@expertmesh/wire';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type ClusterRegistry, type PlacementPlan } from '@expertmesh/discovery';
import { EtcdServer } from '../../../test/helpers/etcd-server.js';
import { ClusterMembership } from '../src/cluster-membership.js';
import { loadShardCompute } from '../src/index.js';

const load = { execution: { executionProvider: 'cpu' as const, intraOpThreads: 1 }, weightDtype: 'auto' as const };
const timings = { retireGraceMs: 0, handoffTimeoutMs: 60_000, loadRestFactor: 0 };

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The real etcd registry, counting the shard-record watches it is asked for. */
function counting(registry: EtcdRegistry): { registry: ClusterRegistry; watches: () => number } {
  let watches = 0;
  const counted = Object.create(registry) as EtcdRegistry;
  counted.watchShards = (listener, options) => {
    watches++;
    return registry.watchShards(listener, options);
  };
  return { registry: counted, watches: () => watches };
}

/** The real etcd registry, counting each registered shard's record writes after its registration. */
function countingWrites(registry: EtcdRegistry): { registry: ClusterRegistry; writes: () => number } {
  let writes = 0;
  const counted = Object.create(registry) as EtcdRegistry;
  counted.registerShard = async (...args) => {
    const registration = await registry.registerShard(...args);
    const update = registration.update.bind(registration);
    registration.update = (record) => (writes++, update(record));
    return registration;
  };
  return { registry: counted, writes: () => writes };
}

/**
 * During a plan switch a shard waits twice on the other shards' records (its turn to load on its
 * host, then the hand-over). Both waits answer from one records watch the membership keeps from its
 * join to its departure: a switch creates no watch. Two shards on one host, real etcd, real loads.
 */
describe('a shard following the plan', () => {
  let dir: string;
  let etcd: EtcdServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'expertmesh-watches-'));
    await makeCheckpoint({ preset: 'tiny', outDir: dir, seed: 5 });
    etcd = await EtcdServer.start();
  });
  afterAll(async () => {
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('waits for its turn and for the hand-over from one records watch kept for its life', async () => {
    const store = new EtcdRegistry([etcd.url], 'watches');
    const members: { membership: ClusterMembership; watches: () => number; registry: EtcdRegistry }[] = [];
    try {
      const computes = await Promise.all([0, 1].map(() => loadShardCompute(dir, { experts: new Set(), layers: null }, load)));
      const { config, fingerprint } = computes[0]!;
      const plan = (version: number, split: number): PlacementPlan => {
        const first = planPlacement({ config, modelFingerprint: fingerprint, version, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
        const all = config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: config.nRoutedExperts }, (_, e) => e) }));
        // Experts below `split` on shard-0, the rest on shard-1: each change of `split` moves experts between them.
        return { ...first, shards: { 'shard-0': all.map((l) => ({ layer: l.layer, experts: l.experts.filter((e) => e < split) })), 'shard-1': all.map((l) => ({ layer: l.layer, experts: l.experts.filter((e) => e >= split) })) } };
      };
      await store.putPlan(plan(1, 8));
      for (const [i, compute] of computes.entries()) {
        const registry = new EtcdRegistry([etcd.url], 'watches');
        const { registry: counted, watches } = counting(registry);
        const membership = new ClusterMembership(counted, compute, { shardId: `s${i}`, address: `127.0.0.1:${7100 + i}` }, { modelDir: dir, load }, () => undefined, timings, () => undefined);
        members.push({ membership, watches, registry });
        await membership.joinPlan(10, undefined, undefined, `shard-${i}`, 60_000);
      }
      const atJoin = members.map((m) => m.watches());
      expect(atJoin).toEqual([1, 1]);
      for (const [version, split] of [[2, 4], [3, 12], [4, 8]] as const) {
        await store.putPlan(plan(version, split));
        await until(`plan v${version} switched`, async () => members.every((m) => m.membership.planVersion === version) && (await store.listShards()).every((r) => r.planVersion === version));
        const records = await store.listShards();
        for (const slot of ['shard-0', 'shard-1']) expect(records.find((r) => r.slot === slot)!.layers).toEqual(plan(version, split).shards[slot]);
      }
      // Three switches, each with a turn and a hand-over wait on both shards: still the watch of the join.
      expect(members.map((m) => m.watches())).toEqual(atJoin);
    } finally {
      for (const m of members) {
        await m.membership.leave();
        await m.registry.close();
      }
      await store.close();
    }
  });

  it('writes its record once for a switch that gives nothing up or gives up only what others advertise already, twice only when it gains experts and gives up some nobody else holds yet', async () => {
    const cluster = 'writes';
    const store = new EtcdRegistry([etcd.url], cluster);
    const members: { membership: ClusterMembership; writes: () => number; registry: EtcdRegistry }[] = [];
    try {
      const computes = await Promise.all([0, 1].map(() => loadShardCompute(dir, { experts: new Set(), layers: null }, load)));
      const { config, fingerprint } = computes[0]!;
      const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, e) => from + e);
      const half = config.nRoutedExperts / 2;
      const plan = (version: number, first: number[], second: number[]): PlacementPlan => {
        const base = planPlacement({ config, modelFingerprint: fingerprint, version, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
        return { ...base, shards: { 'shard-0': config.moeLayers.map((layer) => ({ layer, experts: first })), 'shard-1': config.moeLayers.map((layer) => ({ layer, experts: second })) } };
      };
      await store.putPlan(plan(1, range(0, half), range(half, config.nRoutedExperts)));
      for (const [i, compute] of computes.entries()) {
        const registry = new EtcdRegistry([etcd.url], cluster);
        const { registry: counted, writes } = countingWrites(registry);
        const membership = new ClusterMembership(counted, compute, { shardId: `w${i}`, address: `127.0.0.1:${7200 + i}` }, { modelDir: dir, load }, () => undefined, timings, () => undefined);
        members.push({ membership, writes, registry });
        await membership.joinPlan(10, undefined, undefined, `shard-${i}`, 60_000);
      }
      /** Stores `p` and waits until both shards report it; the record writes each made for it, and the records match the plan. */
      const switchTo = async (p: PlacementPlan): Promise<number[]> => {
        const before = members.map((m) => m.writes());
        await store.putPlan(p);
        await until(`plan v${p.version} switched`, async () => members.every((m) => m.membership.planVersion === p.version) && (await store.listShards()).every((r) => r.planVersion === p.version));
        const records = await store.listShards();
        for (const slot of ['shard-0', 'shard-1']) expect(records.find((r) => r.slot === slot)!.layers).toEqual(p.shards[slot]);
        return members.map((m, i) => m.writes() - before[i]!);
      };
      // v2: shard-0 also takes two experts of shard-1 (copies): it loads them and gives nothing up. One write each.
      expect(await switchTo(plan(2, range(0, half + 2), range(half, config.nRoutedExperts)))).toEqual([1, 1]);
      // v3: it gives the two copies up again; shard-1 advertises them already: one record, the switch's.
      expect(await switchTo(plan(3, range(0, half), range(half, config.nRoutedExperts)))).toEqual([1, 1]);
      // v4: a swap: shard-0 gives expert 0 to shard-1 and takes expert `half`. shard-0 loads first (the earlier
      // slot on this host): nobody else holds 0 yet, so it advertises old and new, then switches (two writes);
      // shard-1 then finds `half` advertised by shard-0 already: one write.
      expect(await switchTo(plan(4, range(1, half + 1), [0, ...range(half, config.nRoutedExperts)]))).toEqual([2, 1]);
      // v5: shard-0 gives `half` back to shard-1, which holds it still: one write each.
      expect(await switchTo(plan(5, range(1, half), [0, ...range(half, config.nRoutedExperts)]))).toEqual([1, 1]);
      // v6: shard-0 gives expert 1 to shard-1, which does not hold it yet, and gains nothing: its record of old
      // and new would say what its last one said, so it writes only the switch's, once shard-1 advertises 1.
      expect(await switchTo(plan(6, range(2, half), [0, 1, ...range(half, config.nRoutedExperts)]))).toEqual([1, 1]);
    } finally {
      for (const m of members) {
        await m.membership.leave();
        await m.registry.close();
      }
      await store.close();
    }
  });

  it('runs the call path warm-up of a joining shard after its load, then puts its autogroup back, before its record names the experts; neither once it serves', async () => {
    const cluster = 'warm';
    const store = new EtcdRegistry([etcd.url], cluster);
    const registry = new EtcdRegistry([etcd.url], cluster);
    const events: string[] = [];
    let membership: ClusterMembership | null = null;
    try {
      const compute = await loadShardCompute(dir, { experts: new Set(), layers: null }, load);
      const { config, fingerprint } = compute;
      const held = (): string => compute.experts.heldLayers().map((l) => l.experts.length).join(',');
      const plan = (version: number, count: number): PlacementPlan => {
        // shard-1 (no process: nothing waits on it) holds every expert, shard-0 the first `count` of each layer.
        const first = planPlacement({ config, modelFingerprint: fingerprint, version, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
        const experts = (n: number) => config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: n }, (_, e) => e) }));
        return { ...first, shards: { 'shard-0': experts(count), 'shard-1': experts(config.nRoutedExperts) } };
      };
      const logged = Object.create(registry) as EtcdRegistry;
      logged.registerShard = async (...args) => {
        const registration = await registry.registerShard(...args);
        const update = registration.update.bind(registration);
        registration.update = (record) => (events.push(`record: ${record.layers.map((l) => l.experts.length).join(',')}`), update(record));
        return registration;
      };
      const warmCallPath = async (): Promise<void> => void events.push(`warm-up: holds ${held()}, answered a call: ${compute.stepEnds.answeredAny}`);
      const beforeAnnounce = async (): Promise<void> => void events.push(`autogroup back: holds ${held()}`);
      await store.putPlan(plan(1, 4));
      membership = new ClusterMembership(logged, compute, { shardId: 'warm-0', address: '127.0.0.1:7300' }, { modelDir: dir, load, warmCallPath, beforeAnnounce }, () => undefined, timings, () => undefined);
      await membership.joinPlan(10, undefined, undefined, 'shard-0', 60_000);
      const four = config.moeLayers.map(() => 4).join(',');
      expect(events).toEqual([`warm-up: holds ${four}, answered a call: false`, `autogroup back: holds ${four}`, `record: ${four}`]);
      // Serving now (it answered a call): a switch warms nothing up.
      await compute.run(request(compute.fingerprint, config.hiddenSize, config.moeLayers[0]!, [1, 2]), performance.now());
      events.length = 0;
      await store.putPlan(plan(2, 6));
      await until('plan v2 switched', async () => membership!.planVersion === 2 && (await store.listShards()).every((r) => r.planVersion === 2));
      expect(events).toEqual([`record: ${config.moeLayers.map(() => 6).join(',')}`]);
    } finally {
      await membership?.leave();
      await registry.close();
      await store.close();
    }
  });

  it('two serving shards of one host ready to switch at one moment write their switch records at different step ends, in slot order', async () => {
    const cluster = 'turns';
    const store = new EtcdRegistry([etcd.url], cluster);
    const members: { membership: ClusterMembership; registry: EtcdRegistry }[] = [];
    /** Each record write of a shard after its registration: its slot, the plan version it reports, and the step it came in. */
    const writes: { slot: string; planVersion: number; step: number }[] = [];
    let step = 0;
    let planChangesArrived = 0;
    try {
      const computes = await Promise.all([0, 1].map(() => loadShardCompute(dir, { experts: new Set(), layers: null }, load)));
      const { config, fingerprint } = computes[0]!;
      const plan = (version: number): PlacementPlan => planPlacement({ config, modelFingerprint: fingerprint, version, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
      await store.putPlan(plan(1));
      for (const [i, compute] of computes.entries()) {
        const registry = new EtcdRegistry([etcd.url], cluster);
        const logged = Object.create(registry) as EtcdRegistry;
        logged.registerShard = async (...args) => {
          const registration = await registry.registerShard(...args);
          const update = registration.update.bind(registration);
          registration.update = (record) => (writes.push({ slot: record.slot, planVersion: record.planVersion, step }), update(record));
          return registration;
        };
        // A plan change has reached this shard once its watch asks the pace for a step end.
        logged.watchPlan = (listener, options = {}) => registry.watchPlan(listener, { ...options, pace: options.pace && (() => (planChangesArrived++, options.pace!())) });
        const membership = new ClusterMembership(logged, compute, { shardId: `t${i}`, address: `127.0.0.1:${7500 + i}` }, { modelDir: dir, load }, () => undefined, timings, () => undefined);
        members.push({ membership, registry });
        await membership.joinPlan(10, undefined, undefined, `shard-${i}`, 60_000);
        // Serving: it has answered a call (for two of its experts).
        const held = compute.experts.heldLayers()[0]!;
        await compute.run(request(compute.fingerprint, config.hiddenSize, held.layer, held.experts.slice(0, 2)), performance.now());
      }
      // The router's steps, as the test ends them: every wait for a step's end (the watches' pace, a turn) waits for the next.
      const waiting: (() => void)[] = [];
      for (const compute of computes) {
        compute.stepEnds.next = () => new Promise((resolve) => waiting.push(() => resolve('step-end')));
        compute.stepEnds.later = async (count) => {
          for (let i = 0; i < count; i++) await new Promise<void>((resolve) => waiting.push(resolve));
        };
      }
      writes.length = 0;
      planChangesArrived = 0;
      // Plan v2 changes no expert: both shards are ready to switch as soon as they take it in, at one step end.
      // No step ends before the change has reached both (each etcd client's watch delivers it in its own time).
      await store.putPlan(plan(2));
      await until('plan v2 reached both shards', async () => planChangesArrived >= 2);
      await until('plan v2 switched', async () => {
        step++;
        for (const resume of waiting.splice(0)) resume();
        return members.every((m) => m.membership.planVersion === 2);
      });
      const at = (slot: string): number => writes.find((w) => w.slot === slot && w.planVersion === 2)!.step;
      expect(writes.filter((w) => w.planVersion === 2).map((w) => w.slot)).toEqual(['shard-0', 'shard-1']);
      expect(at('shard-1')).toBeGreaterThan(at('shard-0'));
    } finally {
      for (const m of members) {
        await m.membership.leave();
        await m.registry.close();
      }
      await store.close();
    }
  });

  it('takes a new plan in at the end of the router step in flight, not when its event arrives', async () => {
    const cluster = 'paced';
    const store = new EtcdRegistry([etcd.url], cluster);
    const registry = new EtcdRegistry([etcd.url], cluster);
    let membership: ClusterMembership | null = null;
    try {
      const compute = await loadShardCompute(dir, { experts: new Set(), layers: null }, load);
      const { config, fingerprint } = compute;
      const plan = (version: number, count: number): PlacementPlan => {
        // shard-1 (no process: nothing waits on it) holds every expert, shard-0 the first `count` of each layer.
        const first = planPlacement({ config, modelFingerprint: fingerprint, version, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
        const experts = (n: number) => config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: n }, (_, e) => e) }));
        return { ...first, shards: { 'shard-0': experts(count), 'shard-1': experts(config.nRoutedExperts) } };
      };
      // The plan watch's pace, as the membership gives it, counted.
      let planPaces = 0;
      const counted = Object.create(registry) as EtcdRegistry;
      counted.watchPlan = (listener, options) => {
        expect(options?.pace).toBeTypeOf('function');
        return registry.watchPlan(listener, { pace: () => (planPaces++, options!.pace!()) });
      };
      await store.putPlan(plan(1, 4));
      membership = new ClusterMembership(counted, compute, { shardId: 'pace-0', address: '127.0.0.1:7400' }, { modelDir: dir, load }, () => undefined, timings, () => undefined);
      await membership.joinPlan(10, undefined, undefined, 'shard-0', 60_000);
      const held = (): number[] => compute.experts.heldLayers().map((l) => l.experts.length);
      expect(held()).toEqual(config.moeLayers.map(() => 4));
      // A step in flight that does not end until the test says so: every wait for a step's end is held.
      const stepEnd = compute.stepEnds.next.bind(compute.stepEnds);
      const heldWaits: (() => void)[] = [];
      let inStep = true;
      compute.stepEnds.next = () => (inStep ? new Promise((resolve) => heldWaits.push(() => resolve('step-end'))) : stepEnd());
      const pacesBefore = planPaces;
      await store.putPlan(plan(2, 6));
      await until('the plan event reached the shard and waits for its pace', async () => planPaces > pacesBefore);
      // It has the event, and has neither checked nor loaded nor published anything for it.
      expect(membership.planVersion).toBe(1);
      expect(held()).toEqual(config.moeLayers.map(() => 4));
      expect((await store.listShards()).find((r) => r.slot === 'shard-0')!.planVersion).toBe(1);
      inStep = false;
      for (const resume of heldWaits.splice(0)) resume();
      await until('plan v2 switched', async () => membership!.planVersion === 2 && (await store.listShards()).every((r) => r.planVersion === 2));
      expect(held()).toEqual(config.moeLayers.map(() => 6));
    } finally {
      await membership?.leave();
      await registry.close();
      await store.close();
    }
  });
});

/** A router's call for `experts` of `layer` on two token rows. */
function request(fingerprint: string, H: number, layer: number, experts: number[]): RunExpertsRequest__Output {
  const hidden = Float32Array.from({ length: 2 * H }, (_, i) => Math.sin(i * 0.37) * 0.5);
  const pairs = encodePairs({ tokenRows: Int32Array.from(experts.map((_, i) => i % 2)), expertIds: Int32Array.from(experts), weights: Float32Array.from(experts.map(() => 0.25)) });
  return { requestId: '1', modelFingerprint: fingerprint, layer, hidden: { rowScales: Buffer.alloc(0), ...encodeTensor(hidden, 2, H, 'float32') } as Tensor__Output, ...pairs, outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} } as unknown as RunExpertsRequest__Output;
}
