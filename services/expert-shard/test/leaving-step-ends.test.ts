import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { EtcdServer } from '../../../test/helpers/etcd-server.js';
import { ClusterMembership } from '../src/cluster-membership.js';
import { loadShardCompute } from '../src/index.js';

const load = { execution: { executionProvider: 'cpu' as const, intraOpThreads: 1 }, weightDtype: 'auto' as const };
const timings = { retireGraceMs: 0, handoffTimeoutMs: 60_000, loadRestFactor: 0 };

const described = (record: ShardRecord): string => (record.health === 'NOT_SERVING' ? 'record: not serving' : record.draining ? 'record: draining' : 'record: serving');

/**
 * A shard leaving (SIGTERM) still answers the router's calls until its NOT_SERVING record. Its own work
 * of the hand-over (the draining mark, the re-plan without its slot and the plan's write, NOT_SERVING)
 * falls in the quiet part of a router step, as a plan switch's does (StepEnds), not on the calls of the
 * step in flight: each write wakes every watcher (the router, every shard, etcd) on the cores that serve.
 * And it does not parse the plan it stores itself (its plan watch is stopped first): it takes no plan in.
 * Real etcd, two shards loading real experts; the leaving shard's steps are driven by the test.
 */
describe('a shard leaving the cluster', () => {
  let dir: string;
  let etcd: EtcdServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'expertmesh-leaving-steps-'));
    await makeCheckpoint({ preset: 'tiny', outDir: dir, seed: 7 });
    etcd = await EtcdServer.start();
  });
  afterAll(async () => {
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('marks itself draining, stores the plan without its slot and says NOT_SERVING only at the end of a step', async () => {
    const cluster = 'leaving-steps';
    const store = new EtcdRegistry([etcd.url], cluster);
    const registries = [0, 1].map(() => new EtcdRegistry([etcd.url], cluster));
    const members: ClusterMembership[] = [];
    try {
      const computes = await Promise.all([0, 1].map(() => loadShardCompute(dir, { experts: new Set(), layers: null }, load)));
      const { config, fingerprint } = computes[0]!;
      const half = config.nRoutedExperts / 2;
      const base = planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
      const experts = (keep: (e: number) => boolean) => config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: config.nRoutedExperts }, (_, e) => e).filter(keep) }));
      const plan: PlacementPlan = { ...base, shards: { 'shard-0': experts((e) => e < half), 'shard-1': experts((e) => e >= half) } };
      await store.putPlan(plan);

      // The leaving shard's writes, each with whether a step was in flight when it was made.
      let inStep = false;
      const writes: { what: string; inStep: boolean }[] = [];
      // The same writes by name, and the plan watch's cancel, in the order they came.
      const order: string[] = [];
      const leaverRegistry = Object.create(registries[1]!) as EtcdRegistry;
      leaverRegistry.registerShard = async (...args) => {
        const registration = await registries[1]!.registerShard(...args);
        const update = registration.update.bind(registration);
        registration.update = (record) => (writes.push({ what: described(record), inStep }), order.push(described(record)), update(record));
        return registration;
      };
      leaverRegistry.putPlan = (next, options) => (writes.push({ what: `plan v${next.version}`, inStep }), order.push(`plan v${next.version}`), registries[1]!.putPlan(next, options));
      // Its plan watch's cancel, and every plan the watch parsed and delivered.
      const plansSeen: number[] = [];
      leaverRegistry.watchPlan = async (listener, options) => {
        const stop = await registries[1]!.watchPlan((p) => (p && plansSeen.push(p.version), listener(p)), options);
        return () => (order.push('plan watch stopped'), stop());
      };

      for (const [i, compute] of computes.entries()) {
        const membership = new ClusterMembership(i === 1 ? leaverRegistry : registries[i]!, compute, { shardId: `leave-${i}`, address: `127.0.0.1:${7500 + i}` }, { modelDir: dir, load }, () => undefined, timings, () => undefined);
        members.push(membership);
        await membership.joinPlan(10, undefined, undefined, `shard-${i}`, 60_000);
      }

      // The leaving shard's router steps, driven by the test: a step in flight holds every wait for a step's end
      // until the step ends; then the waits resume, and what they start (the same turn of the event loop) is quiet.
      const leaver = computes[1]!;
      const quiet = leaver.stepEnds.next.bind(leaver.stepEnds);
      const held: (() => void)[] = [];
      leaver.stepEnds.next = () => (inStep ? new Promise((resolve) => held.push(() => resolve('step-end'))) : quiet());
      writes.length = 0;
      order.length = 0;
      inStep = true;
      let done = false;
      const handedOver = members[1]!.handOver().finally(() => (done = true));
      while (!done) {
        await new Promise((r) => setTimeout(r, 10));
        inStep = false;
        for (const resume of held.splice(0)) resume();
        await new Promise((r) => setImmediate(r));
        inStep = true;
      }
      await handedOver;

      expect(writes).toEqual([
        { what: 'record: draining', inStep: false },
        { what: 'plan v2', inStep: false },
        { what: 'record: not serving', inStep: false },
      ]);
      // Leaving, it takes no plan in: its plan watch is stopped before it stores the next plan, which it never parses.
      expect(order).toEqual(['record: draining', 'plan watch stopped', 'plan v2', 'record: not serving']);
      expect(plansSeen).toEqual([1]);
      // The hand-over itself is complete: the plan has no slot of the leaving shard, the other shard holds every expert.
      const stored = await store.getPlan();
      expect(Object.keys(stored!.shards)).toEqual(['shard-0']);
      const records = await store.listShards();
      const sorted = (layers: ShardRecord['layers']) => layers.map((l) => ({ layer: l.layer, experts: [...l.experts].sort((a, b) => a - b) }));
      expect(sorted(records.find((r) => r.slot === 'shard-0')!.layers)).toEqual(experts(() => true));
      expect(records.find((r) => r.slot === 'shard-1')!.health).toBe('NOT_SERVING');
    } finally {
      for (const m of members) await m.leave();
      for (const r of registries) await r.close();
      await store.close();
    }
  });
});
