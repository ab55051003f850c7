import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, layerImbalance, loadFromBasis, planPlacement, planProblem, type ShardRecord } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { ModelConfig } from '@expertmesh/model-config';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { runCli } from '../helpers/cli.js';
import { startShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'slots';

/**
 * Slot claims against a real etcd with real shard processes: shards started at the same moment
 * without --slot each get a different slot (before, all four took shard-0 and the cluster never got
 * ready), and a shard that finds every slot taken joins as a new slot and is given work by a re-plan.
 */
describe('atomic slot claims and joining shards', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let config: ModelConfig;
  const stops: (() => Promise<void>)[] = [];
  // Without a joining shard's rests (12× each graph's build by default): they only delay each start here; pacing
  // has its own tests (reshaped-experts, one-load-per-host).
  const shardArgs = (): string[] => ['--model', `${dir.path}/demo`, '--cluster', cluster, '--etcd', etcd.url, '--listen', '127.0.0.1:0', '--lease-ttl', '3', '--join-load-rest', '0'];
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  let routerUrl = '';
  const held = (r: ShardRecord): number => r.layers.reduce((a, l) => a + l.experts.length, 0);

  beforeAll(async () => {
    dir = await tempDir('slots');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 3 });
    const identity = await readCheckpointIdentity(`${dir.path}/demo`);
    config = identity.config;
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config, modelFingerprint: identity.fingerprint, version: 1, slots: ['shard-0', 'shard-1', 'shard-2', 'shard-3'], bytesPerExpert: 1 }));
  });
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('four shards started at once without --slot take four different slots, and the router gets ready', async () => {
    const shards = await Promise.all(Array.from({ length: 4 }, () => startShardProcess(shardArgs())));
    for (const s of shards) stops.push(s.stop);
    const records = await registry.listShards();
    expect(records.map((r) => r.slot).sort()).toEqual(['shard-0', 'shard-1', 'shard-2', 'shard-3']);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(1);
    for (const r of records) {
      expect(r.health).toBe('SERVING');
      expect(r.planVersion).toBe(1);
      expect(r.layers).toEqual(plan.shards[r.slot]);
    }
    const router = await startServeProcess(['--model', `${dir.path}/demo`, '--cluster', cluster, '--etcd', etcd.url]);
    stops.push(router.stop);
    await until('router ready', async () => (await fetch(`${router.url}/ready`)).status === 200);
    routerUrl = router.url;
  });

  it('plan --load-from a router re-plans from its measured load and says what moves; the plan keeps that load', async () => {
    for (const prompt of ['Load to measure', 'More tokens through the experts']) {
      const res = await fetch(`${routerUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt, max_tokens: 16, temperature: 0, ignore_eos: true }) });
      expect(res.status).toBe(200);
    }
    const before = (await registry.getPlan())!;
    const r = await runCli(['plan', '--model', `${dir.path}/demo`, '--load-from', `${routerUrl}/metrics`, '--store', '--cluster', cluster, '--etcd', etcd.url]);
    expect(r.code).toBe(0);
    const measured = /measured load: (\d+) tokens; imbalance \(max over mean tokens per shard, worst layer\): ([\d.]+) now, ([\d.]+) with this plan/.exec(r.stdout);
    expect(measured, r.stdout + r.stderr).not.toBeNull();
    expect(Number(measured![3])).toBeLessThanOrEqual(Number(measured![2]));
    expect(r.stdout).toMatch(new RegExp(`moves \\d+ experts \\([\\d.]+ GiB\\) relative to plan v${before.version}`));
    const after = (await registry.getPlan())!;
    expect(after.version).toBe(before.version + 1);
    // Same slots; the load it was made from is stored with it: every routed token, top-k per token per layer.
    expect(Object.keys(after.shards).sort()).toEqual(Object.keys(before.shards).sort());
    const stored = Object.values(after.basis!.expertLoad!).reduce((a, row) => a + row.reduce((b, v) => b + v, 0), 0);
    expect(stored).toBe(Number(measured![1]));
    expect(stored % (config.numExpertsPerTok * config.moeLayers.length)).toBe(0);
    await until('every shard on the re-plan', async () => (await registry.listShards()).every((s) => s.planVersion === after.version));
  });

  it('a fifth shard finds every slot taken: it claims a new slot, stores a re-plan that gives it work, and the others hand theirs over', async () => {
    const before = (await registry.getPlan())!;
    const fifth = await startShardProcess(shardArgs());
    stops.push(fifth.stop);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(before.version + 1);
    expect(Object.keys(plan.shards).sort()).toEqual(['shard-0', 'shard-1', 'shard-2', 'shard-3', 'shard-4']);
    expect(planProblem(plan, config)).toBeNull();
    // It serves its share of the load the plan was made for (the router's measured load), listed once it was ready.
    const joined = (await registry.listShards()).find((r) => r.slot === 'shard-4')!;
    expect(joined.layers).toEqual(plan.shards['shard-4']);
    const load = loadFromBasis(plan)!;
    for (const layer of config.moeLayers) {
      const { perSlot } = layerImbalance(plan, layer, load);
      const mean = Object.values(perSlot).reduce((a, b) => a + b, 0) / 5;
      expect(perSlot['shard-4']).toBeGreaterThan(0.5 * mean);
    }
    expect(held(joined)).toBeGreaterThan(0);
    // The others switch to the new plan: each ends up advertising exactly its slot's experts.
    await until('every shard on the new plan', async () => (await registry.listShards()).every((r) => r.planVersion === plan.version && JSON.stringify(r.layers) === JSON.stringify(plan.shards[r.slot])));
    expect(Object.values(before.shards).flat().length).toBe(Object.values(plan.shards).flat().length - config.moeLayers.length);
  });
});
