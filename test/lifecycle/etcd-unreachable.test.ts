import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdProcess, EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { connectionsTo } from '../helpers/process-tree.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** A shard's etcd client across etcd restarts and outages: one connection, and a shutdown that never waits on it. */
describe('a shard and its etcd', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdProcess;
  let registry: EtcdRegistry;
  const shards: ShardProcess[] = [];
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const startShard = async (slot: string): Promise<ShardProcess> => {
    const s = await startShardProcess(['--model', dir.path, '--cluster', 'c', '--etcd', etcd.url, '--slot', slot, '--shard-id', slot, '--listen', '127.0.0.1:0', '--lease-ttl', '3']);
    shards.push(s);
    return s;
  };

  beforeAll(async () => {
    dir = await tempDir('etcd-outage');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 2 });
    const { config, fingerprint } = await readCheckpointIdentity(dir.path);
    etcd = await EtcdProcess.start();
    registry = new EtcdRegistry([etcd.url], 'c');
    await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: ['a', 'b'], bytesPerExpert: 1 }));
  });
  afterAll(async () => {
    await Promise.all(shards.map((s) => s.kill()));
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('keeps one connection to etcd across etcd restarts (the client is reused, not multiplied)', async () => {
    const shard = await startShard('a');
    const registered = async (): Promise<boolean> => (await registry.listShards()).some((r) => r.shardId === 'a');
    await until('registered', registered);
    for (let i = 0; i < 3; i++) {
      await etcd.kill();
      await new Promise((r) => setTimeout(r, 4000)); // past the lease: the shard must register again
      await etcd.run();
      await until(`registered again after restart ${i + 1}`, registered);
      // Connections settle once the record is back (a client multiplied per restart would stay above one).
      await until(`one connection after restart ${i + 1}`, async () => connectionsTo(shard.pid, etcd.clientPort) === 1, 10_000).catch(() => undefined);
      expect(connectionsTo(shard.pid, etcd.clientPort)).toBe(1);
    }
  });

  it('SIGTERM while etcd is unreachable (stopped, so calls hang): the shard exits within its bound', async () => {
    const shard = await startShard('b');
    await until('registered', async () => (await registry.listShards()).some((r) => r.shardId === 'b'));
    etcd.signal('SIGSTOP');
    try {
      shard.signal('SIGTERM');
      const outcome = await Promise.race([shard.exited.then(() => 'exited'), new Promise((r) => setTimeout(() => r('still running after 20 s'), 20_000))]);
      expect(outcome).toBe('exited');
      // Leaving the registry is bounded (3 s for the lease, 3 s for the client); draining is instant here.
      expect(shard.process.exitCode).toBe(0);
    } finally {
      etcd.signal('SIGCONT');
    }
  });
});
