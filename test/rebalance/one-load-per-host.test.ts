import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer, etcdReads } from '../helpers/etcd-server.js';
import { stopAll, switchedPlan, until } from '../helpers/rebalance-cluster.js';
import { runShardToExit, startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'oneload';
const SLOTS = ['shard-0', 'shard-1'];
/**
 * How long the registry's reads are counted while a shard waits (or nothing happens). An absence can
 * only be seen over time; this window only ends a count, nothing waits on it to proceed. The polling
 * these waits replace read every 50 ms (turn) and 100 ms (hand-over): 40 and 20 reads in this window.
 */
const OBSERVE_MS = 2000;
/** A watch's creation reads the records once, and once more when etcd confirms it ('connected'). */
const READS_TO_START_A_WATCH = 2;

type Layers = PlacementPlan['shards'][string];

/** Registry reads during OBSERVE_MS from now. */
async function readsOver(url: string): Promise<number> {
  const before = await etcdReads(url);
  await new Promise((r) => setTimeout(r, OBSERVE_MS));
  // The count's own /metrics request is HTTP, not a range.
  return (await etcdReads(url)) - before;
}

const withExperts = (layers: Layers, add: Layers): Layers =>
  layers.map((l) => ({ layer: l.layer, experts: [...new Set([...l.experts, ...(add.find((a) => a.layer === l.layer)?.experts ?? [])])].sort((a, b) => a - b) }));
const withoutExperts = (layers: Layers, drop: Layers): Layers =>
  layers.map((l) => ({ layer: l.layer, experts: l.experts.filter((e) => !(drop.find((d) => d.layer === l.layer)?.experts.includes(e) ?? false)) }));

/**
 * Shards on one host share its cores with the router and with each other: when a new plan comes,
 * they load their new experts one at a time, in slot order, so serving never waits on several loads
 * at once. Real etcd and two shard processes on loopback (one host). shard-0 is stopped (SIGSTOP)
 * before the plan is stored, so it cannot load: shard-1 must wait for it, and load only once shard-0
 * advertises every expert the plan gives it. A shard waiting for its turn, or for another to take over
 * the experts it gives up, watches the shard records in etcd instead of polling them: it reads the
 * registry only when a record changes, and proceeds as soon as the one it waits for does.
 */
describe('co-located shards load a new plan one at a time, waiting on etcd watches', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let plan1: PlacementPlan;
  const shards = new Map<string, ShardProcess>();

  beforeAll(async () => {
    dir = await tempDir('oneload');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 12 });
    const { config, fingerprint } = await readCheckpointIdentity(dir.path);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    plan1 = planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: SLOTS, bytesPerExpert: 1 });
    await registry.putPlan(plan1);
    for (const slot of SLOTS) shards.set(slot, await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', slot, '--listen', '127.0.0.1:0', '--lease-ttl', '60']));
    // (A long lease: a stopped shard's record must outlive the seconds it is stopped.)
    await until('both shards on plan 1', async () => (await switchedPlan(registry))?.version === 1);
  });
  afterAll(async () => {
    for (const s of shards.values()) s.signal('SIGCONT');
    await stopAll({ shards: shards.values(), registry, etcd, dir });
  });

  it('in steady state no shard reads the registry', async () => {
    expect(await readsOver(etcd.url)).toBe(0);
  });

  it('the later slot waits while the earlier one has not loaded, and loads once it advertises its experts of the plan', async () => {
    // Plan 2: each slot keeps its experts and gains two of the other's (a replica), in every layer.
    const gains = (from: string) => plan1.shards[from]!.map((l) => ({ layer: l.layer, experts: l.experts.slice(0, 2) }));
    const grown = (slot: string, other: string) => plan1.shards[slot]!.map((l) => ({ layer: l.layer, experts: [...l.experts, ...gains(other).find((g) => g.layer === l.layer)!.experts].sort((a, b) => a - b) }));
    const plan2: PlacementPlan = { ...plan1, version: 2, shards: { 'shard-0': grown('shard-0', 'shard-1'), 'shard-1': grown('shard-1', 'shard-0') } };
    const holds = (r: ShardRecord | undefined, layers: readonly { layer: number; experts: readonly number[] }[]): boolean =>
      r !== undefined && layers.every((l) => l.experts.every((e) => r.layers.find((x) => x.layer === l.layer)?.experts.includes(e) ?? false));
    const gainedBy1 = gains('shard-0');
    const advertisesAGain = (records: readonly ShardRecord[]): boolean => gainedBy1.some((l) => l.experts.some((e) => holds(records.find((r) => r.slot === 'shard-1'), [{ layer: l.layer, experts: [e] }])));
    const views: ShardRecord[][] = [];
    const stopWatch = await registry.watchShards((records) => views.push(records));
    try {
      shards.get('shard-0')!.signal('SIGSTOP');
      await registry.putPlan(plan2, { replaces: 1 });
      await until('shard-1 says it waits for shard-0', async () => shards.get('shard-1')!.stderr().includes('waiting for shard-0 on this host to load first'), 30_000);
      // Waiting, it reads nothing while nothing changes.
      expect(await readsOver(etcd.url)).toBeLessThanOrEqual(READS_TO_START_A_WATCH);
      expect(advertisesAGain(await registry.listShards())).toBe(false);
      shards.get('shard-0')!.signal('SIGCONT');
      await until('both shards on plan 2', async () => (await switchedPlan(registry))?.version === 2, 60_000);
      // The watch's events arrive after the read that saw plan 2 switched: wait until it has seen shard-1's gain.
      await until('the watch saw shard-1 advertise an expert it gained', async () => views.some(advertisesAGain), 30_000);
      // In every registry state seen: shard-1 advertised an expert it gained only once shard-0 advertised all of its plan-2 experts.
      const first = views.findIndex(advertisesAGain);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(holds(views[first]!.find((r) => r.slot === 'shard-0'), plan2.shards['shard-0']!)).toBe(true);
    } finally {
      shards.get('shard-0')!.signal('SIGCONT');
      await stopWatch();
    }
  });

  it('a shard handing experts over reads nothing until the taker advertises them, then switches', async () => {
    const plan2 = (await registry.getPlan())!;
    // Plan 3: shard-0 gives its last expert of each layer to shard-1 (and the two replicas it gained back).
    const moved: Layers = plan1.shards['shard-0']!.map((l) => ({ layer: l.layer, experts: l.experts.slice(-1) }));
    const plan3: PlacementPlan = { ...plan2, version: 3, shards: { 'shard-0': withoutExperts(plan1.shards['shard-0']!, moved), 'shard-1': withExperts(plan2.shards['shard-1']!, moved) } };
    const handingOver = (): boolean => shards.get('shard-0')!.stderr().includes('plan 3: loaded in');
    shards.get('shard-1')!.signal('SIGSTOP');
    try {
      await registry.putPlan(plan3, { replaces: 2 });
      await until('shard-0 hands over and waits', async () => handingOver(), 30_000);
      expect(await readsOver(etcd.url)).toBeLessThanOrEqual(READS_TO_START_A_WATCH);
      expect((await registry.listShards()).find((r) => r.slot === 'shard-0')!.planVersion).toBe(2);
    } finally {
      shards.get('shard-1')!.signal('SIGCONT');
    }
    await until('both shards on plan 3', async () => (await switchedPlan(registry))?.version === 3, 60_000);
    // The shard logs its switch after its record is written: the line may reach its stderr pipe a moment later.
    await until('shard-0 logs its switch', async () => shards.get('shard-0')!.stderr().includes('plan 3: switched'), 30_000);
  });

  it.each(['load-rest', 'join-load-rest'])('a shard refuses a --%s that is not a number from 0 to 100, saying so', async (flag) => {
    for (const bad of ['-1', 'fast', '101']) {
      const r = await runShardToExit(['--model', dir.path, '--listen', '127.0.0.1:0', `--${flag}=${bad}`]);
      expect({ bad, code: r.code === 0 }).toEqual({ bad, code: false });
      expect(r.stderr).toContain(`--${flag} must be a number from 0 to 100`);
    }
  });
});
