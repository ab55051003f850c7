import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { switchedPlan, until } from '../helpers/rebalance-cluster.js';
import { SHARD_MAIN, startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'handoff';

/**
 * What SIGTERM does to the plan, by flag, against a real etcd with real shard processes: a shard with
 * --slot hands its experts over only with --handoff; a shard that took its slot by itself would hand
 * over, but not with --no-handoff. Each shard leaves while the others still serve.
 */
describe('shard --handoff and --no-handoff', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  const shards = new Map<string, ShardProcess>();
  const start = (...more: string[]): Promise<ShardProcess> =>
    startShardProcess(['--model', `${dir.path}/tiny`, '--cluster', cluster, '--etcd', etcd.url, '--listen', '127.0.0.1:0', '--lease-ttl', '3', '--retire-grace', '1', ...more]);
  /** SIGTERM, and the exit code. */
  const terminate = async (slot: string): Promise<number | null> => {
    const s = shards.get(slot)!;
    const exited = new Promise<number | null>((resolve) => s.process.once('exit', (code) => resolve(code)));
    s.process.kill('SIGTERM');
    const code = await exited;
    shards.delete(slot);
    return code;
  };

  beforeAll(async () => {
    dir = await tempDir('handoff');
    await makeCheckpoint({ preset: 'tiny', outDir: `${dir.path}/tiny`, seed: 9 });
    const identity = await readCheckpointIdentity(`${dir.path}/tiny`);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config: identity.config, modelFingerprint: identity.fingerprint, version: 1, slots: ['shard-0', 'shard-1', 'shard-2'], bytesPerExpert: 1 }));
    shards.set('shard-0', await start('--slot', 'shard-0', '--handoff'));
    shards.set('shard-1', await start('--slot', 'shard-1'));
    // Takes the one slot left by itself.
    const free = await start('--no-handoff');
    const slot = (await registry.listShards()).find((r) => r.address === free.address)?.slot;
    shards.set(slot ?? 'unknown', free);
  });
  afterAll(async () => {
    for (const s of shards.values()) await s.stop().catch(() => undefined);
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('the shard without --slot and --no-handoff took the free slot', async () => {
    expect([...shards.keys()].sort()).toEqual(['shard-0', 'shard-1', 'shard-2']);
    await until('every shard serves plan 1', async () => (await switchedPlan(registry))?.version === 1);
  });

  it('--slot with --handoff: SIGTERM stores a plan without its slot, the others take its experts over, then it exits 0', async () => {
    expect(await terminate('shard-0')).toBe(0);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(2);
    expect(Object.keys(plan.shards).sort()).toEqual(['shard-1', 'shard-2']);
    // It left only once the others advertised every expert it held.
    const records = await registry.listShards();
    expect(records.map((r) => r.slot).sort()).toEqual(['shard-1', 'shard-2']);
    await until('the others serve plan 2', async () => (await switchedPlan(registry))?.version === 2);
  });

  it('no slot but --no-handoff: SIGTERM leaves the plan as it is', async () => {
    expect(await terminate('shard-2')).toBe(0);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(2);
    expect(Object.keys(plan.shards).sort()).toEqual(['shard-1', 'shard-2']);
  });

  it('--slot without --handoff: SIGTERM leaves the plan as it is (the slot waits for its shard to come back)', async () => {
    expect(await terminate('shard-1')).toBe(0);
    const plan = (await registry.getPlan())!;
    expect(plan.version).toBe(2);
    expect(Object.keys(plan.shards)).toContain('shard-1');
  });

  it('--handoff and --no-handoff together are refused (exit code 2)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', SHARD_MAIN, '--model', `${dir.path}/tiny`, '--handoff', '--no-handoff'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).toBe(2);
    expect(stderr).toContain('give --handoff or --no-handoff, not both');
  });
});
