import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { stopAll, switchedPlan, until } from '../helpers/rebalance-cluster.js';
import { runShardToExit, startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'oneload';
const SLOTS = ['shard-0', 'shard-1'];

/**
 * Shards on one host share its cores with the router and with each other: when a new plan comes,
 * they load their new experts one at a time, in slot order, so serving never waits on several loads
 * at once. Real etcd and two shard processes on loopback (one host). shard-0 is stopped (SIGSTOP)
 * before the plan is stored, so it cannot load: shard-1 must wait for it, and load only once shard-0
 * advertises every expert the plan gives it.
 */
describe('co-located shards load a new plan one at a time', () => {
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
    for (const slot of SLOTS) shards.set(slot, await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', slot, '--listen', '127.0.0.1:0', '--lease-ttl', '10']));
    await until('both shards on plan 1', async () => (await switchedPlan(registry))?.version === 1);
  });
  afterAll(async () => {
    for (const s of shards.values()) s.signal('SIGCONT');
    await stopAll({ shards: shards.values(), registry, etcd, dir });
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
      expect(advertisesAGain(await registry.listShards())).toBe(false);
      shards.get('shard-0')!.signal('SIGCONT');
      await until('both shards on plan 2', async () => (await switchedPlan(registry))?.version === 2, 60_000);
      // In every registry state seen: shard-1 advertised an expert it gained only once shard-0 advertised all of its plan-2 experts.
      const first = views.findIndex(advertisesAGain);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(holds(views[first]!.find((r) => r.slot === 'shard-0'), plan2.shards['shard-0']!)).toBe(true);
    } finally {
      await stopWatch();
    }
  });

  it('a shard refuses a --load-rest that is not a number from 0 to 100, saying so', async () => {
    for (const bad of ['-1', 'fast', '101']) {
      const r = await runShardToExit(['--model', dir.path, '--listen', '127.0.0.1:0', `--load-rest=${bad}`]);
      expect({ bad, code: r.code === 0 }).toEqual({ bad, code: false });
      expect(r.stderr).toContain('--load-rest must be a number from 0 to 100');
    }
  });
});
