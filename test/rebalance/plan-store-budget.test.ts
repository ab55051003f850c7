import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, type PlacementPlan, type ShardRegistration } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { ModelConfig } from '@expertmesh/model-config';
import { EtcdServer } from '../helpers/etcd-server.js';
import { runCli } from '../helpers/cli.js';
import { serveExpertLoad } from '../helpers/load-metrics.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'budget';
/** What the registered shard reports holding per expert: far above what --weight-dtype auto predicts for tiny. */
const HELD = 2 ** 20;
const HOT = 5;

/**
 * `plan --store` and the memory budget against a real etcd: the budget goes into the planner with the
 * bytes per expert the cluster's shards report holding (their records), a plan over the budget is never
 * stored, and a re-plan without --shard-memory keeps the budget stored with the plan in force.
 */
describe('plan --store honours the shards memory budget', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let shard: ShardRegistration;
  let config: ModelConfig;
  let metrics: Awaited<ReturnType<typeof serveExpertLoad>>;
  let budget = 0;
  const args = (...more: string[]): string[] => ['plan', '--model', `${dir.path}/tiny`, '--store', '--cluster', cluster, '--etcd', etcd.url, ...more];
  const slotBytes = (plan: PlacementPlan, slot: string): number => plan.shards[slot]!.reduce((a, l) => a + l.experts.length, 0) * HELD;

  beforeAll(async () => {
    dir = await tempDir('plan-budget');
    await makeCheckpoint({ preset: 'tiny', outDir: `${dir.path}/tiny`, seed: 5 });
    const identity = await readCheckpointIdentity(`${dir.path}/tiny`);
    config = identity.config;
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    // A shard of this model that holds 4 experts in HELD bytes each (its record is what the planner sizes by).
    shard = await registry.registerShard(
      { shardId: 'held', address: '127.0.0.1:1', modelFingerprint: identity.fingerprint, layers: [{ layer: config.moeLayers[0]!, experts: [0, 1, 2, 3] }], computeDtype: 'float32', weightBytes: 4 * HELD, weightFormat: 'FP8', health: 'SERVING', planVersion: 0, slot: '' },
      30,
    );
    metrics = await serveExpertLoad(config.moeLayers, config.nRoutedExperts, (_layer, e) => (e === HOT ? 4000 : 10));
    // One more expert per layer on each of 4 shards than an even split of the experts and 2 copies needs.
    budget = config.moeLayers.length * (Math.ceil((config.nRoutedExperts + 2) / 4) + 1) * HELD;
  });
  afterAll(async () => {
    await shard?.close().catch(() => undefined);
    await metrics?.close();
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('plans by measured load within the budget, in the bytes the shards report holding, and stores the budget', async () => {
    const r = await runCli(args('--shards', '4', '--redundant-experts', '2', '--shard-memory', `${budget}B`, '--load-from', metrics.url));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/bytes per expert: 1\.00 MiB, as the cluster's shards hold them \(their records: 1 shards, FP8\)/);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(1);
    expect(plan.basis).toMatchObject({ expertBytes: HELD, shardMemoryBytes: budget });
    for (const slot of Object.keys(plan.shards)) expect(slotBytes(plan, slot)).toBeLessThanOrEqual(budget);
    // The two extra copies go to the hot expert of every layer.
    for (const layer of config.moeLayers) {
      expect(Object.values(plan.shards).filter((layers) => layers.find((l) => l.layer === layer)!.experts.includes(HOT))).toHaveLength(3);
    }
  });

  it('a budget the shards cannot hold stores nothing: a typed error says what to do, exit code 1', async () => {
    const before = (await registry.getPlan())!;
    // One expert less per shard than one copy of each expert needs.
    const tooSmall = (config.moeLayers.length * Math.ceil(config.nRoutedExperts / 4) - 1) * HELD;
    const r = await runCli(args('--shards', '4', '--shard-memory', `${tooSmall}B`, '--load-from', metrics.url));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PlacementPlanError: not stored \(plan v1 stays in force\): .*add shards \(--shards\/--nodes\) or give a larger --shard-memory/);
    expect(r.stdout).toMatch(/fits: NO/);
    expect(await registry.getPlan()).toEqual(before);
  });

  it('a re-plan without --shard-memory keeps the stored budget (and the slots, copies and load)', async () => {
    const before = (await registry.getPlan())!;
    const r = await runCli(args());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`memory budget per shard ${(budget / 2 ** 30).toFixed(2)} GiB kept from plan v1 (--shard-memory changes it)`);
    const after = (await registry.getPlan())!;
    expect(after.version).toBe(2);
    expect(after.basis).toEqual(before.basis);
    expect(Object.keys(after.shards).sort()).toEqual(Object.keys(before.shards).sort());
    for (const slot of Object.keys(after.shards)) expect(slotBytes(after, slot)).toBeLessThanOrEqual(budget);
  });
});
