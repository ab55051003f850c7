import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, measuredExpertBytes, planPlacement, redundantCopies } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { ModelConfig } from '@expertmesh/model-config';
import { EtcdServer } from '../helpers/etcd-server.js';
import { completeGreedy, stopAll, switchedPlan, until, type GreedyCompletion } from '../helpers/rebalance-cluster.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'deadslot';
const PROMPTS = ['A shard dies', 'Its lease runs out', 'The plan forgets it'];
const MAX_TOKENS = 8;
const SLOTS = ['shard-0', 'shard-1', 'shard-2'];

/**
 * A shard killed with kill -9 that does not come back, against a real etcd, shard processes and a
 * router process running the closed loop: once its lease has run out and its slot has stayed
 * unclaimed for --dead-slot-grace, the router stores a plan without the slot, the live shards load
 * its experts within the memory budget, and every expert is held twice again. Under load throughout
 * (every expert has a replica, so no request fails), with the same greedy tokens as before the kill.
 */
describe('a dead shard is dropped from the plan', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let config: ModelConfig;
  let expertBytes = 0;
  let router: Awaited<ReturnType<typeof startServeProcess>>;
  const shards = new Map<string, ShardProcess>();
  const results: { prompt: string; out: GreedyCompletion }[] = [];
  let loading = true;
  let load: Promise<void> = Promise.resolve();

  beforeAll(async () => {
    dir = await tempDir('deadslot');
    await makeCheckpoint({ preset: 'demo', outDir: dir.path, seed: 5 });
    const identity = await readCheckpointIdentity(dir.path);
    config = identity.config;
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    // Every expert twice.
    const plan = planPlacement({ config, modelFingerprint: identity.fingerprint, version: 1, slots: SLOTS, redundantExperts: config.nRoutedExperts, bytesPerExpert: 1 });
    await registry.putPlan(plan);
    await Promise.all(
      SLOTS.map(async (slot) => {
        shards.set(slot, await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', slot, '--listen', '127.0.0.1:0', '--lease-ttl', '2', '--retire-grace', '1']));
      }),
    );
    await until('all three shards registered', async () => (await registry.listShards()).length === SLOTS.length);
    // A memory budget with room for the whole model once per shard, in the bytes shards really hold: two shards can hold both copies, not more.
    expertBytes = measuredExpertBytes(await registry.listShards());
    await registry.putPlan({ ...plan, version: 2, basis: { expertBytes, shardMemoryBytes: config.moeLayers.length * config.nRoutedExperts * expertBytes } }, { replaces: 1 });
    await until('shards on the plan with a budget', async () => (await switchedPlan(registry))?.version === 2);
    router = await startServeProcess([
      ...['--model', dir.path, '--served-model-name', 'demo', '--cluster', cluster, '--etcd', etcd.url, '--wire-dtype', 'float32', '--combine-dtype', 'float32'],
      // The loop for dead slots only: the load threshold is out of reach.
      ...['--rebalance-interval', '500ms', '--rebalance-threshold', '1000', '--dead-slot-grace', '2s'],
    ]);
    await until('router ready', async () => (await fetch(`${router.url}/ready`)).status === 200);
  });

  afterAll(async () => {
    loading = false;
    await load.catch(() => undefined);
    await stopAll({ router, shards: shards.values(), registry, etcd, dir });
  });

  it('kill -9 of a shard under load: after its lease and the grace, a plan without its slot; the others hold its experts, every expert twice', async () => {
    const before = new Map<string, GreedyCompletion>();
    for (const p of PROMPTS) before.set(p, await completeGreedy(router.url, 'demo', p, MAX_TOKENS));
    load = Promise.all(
      PROMPTS.map(async (prompt) => {
        while (loading) results.push({ prompt, out: await completeGreedy(router.url, 'demo', prompt, MAX_TOKENS) });
      }),
    ).then(() => undefined);
    await until('load flowing', async () => results.length >= 3);
    const victim = shards.get('shard-1')!;
    await victim.kill();
    shards.delete('shard-1');
    await until('a plan without shard-1', async () => !('shard-1' in (await registry.getPlan())!.shards), 60_000);
    await until('every live shard on that plan', async () => (await switchedPlan(registry)) !== null, 60_000);
    const seen = results.length;
    await until('requests on the new placement', async () => results.length >= seen + 3);
    loading = false;
    await load;

    const plan = (await registry.getPlan())!;
    expect(Object.keys(plan.shards).sort()).toEqual(['shard-0', 'shard-2']);
    expect(redundantCopies(plan, config)).toBe(config.nRoutedExperts);
    // Redundancy restored: the live shards' records advertise every expert twice, within the budget.
    const records = await registry.listShards();
    expect(records.map((r) => r.slot).sort()).toEqual(['shard-0', 'shard-2']);
    for (const layer of config.moeLayers) {
      const copies = new Array<number>(config.nRoutedExperts).fill(0);
      for (const r of records) for (const e of r.layers.find((l) => l.layer === layer)?.experts ?? []) copies[e]!++;
      expect(copies).toEqual(new Array<number>(config.nRoutedExperts).fill(2));
    }
    expect(expertBytes).toBeGreaterThan(0);
    for (const r of records) expect(r.weightBytes).toBeLessThanOrEqual(plan.basis!.shardMemoryBytes!);
    const metrics = await (await fetch(`${router.url}/metrics`)).text();
    expect(metrics).toMatch(/^expertmesh_dead_slots_dropped_total 1$/m);
    expect((await fetch(`${router.url}/ready`)).status).toBe(200);
    // No request failed, and every one got the tokens of the run before the kill.
    expect(results.length).toBeGreaterThan(6);
    for (const { prompt, out } of results) expect({ prompt, status: out.status, tokens: out.tokens }).toEqual({ prompt, status: 200, tokens: before.get(prompt)!.tokens });
  });
});
