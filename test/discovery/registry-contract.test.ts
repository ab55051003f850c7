import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { EtcdRegistry, HttpRegistry, MemoryRegistry, RegistryConflictError, RegistryServer, SlotTakenError, type ClusterRegistry, type ShardRecord } from '@expertmesh/discovery';
import { EtcdServer } from '../helpers/etcd-server.js';

const record = (id: string, over: Partial<ShardRecord> = {}): ShardRecord => ({
  shardId: id,
  address: `127.0.0.1:${5000 + id.length}`,
  modelFingerprint: 'f00',
  layers: [{ layer: 1, experts: [0, 1] }],
  computeDtype: 'float32',
  weightBytes: 10,
  health: 'SERVING',
  planVersion: 0,
  slot: '',
  ...over,
});

const until = async (check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 100));
  }
};

/** The same contract for both registries: the embedded one must behave like etcd. */
interface Harness {
  registry: ClusterRegistry;
  /** Registers shard `id` with a 2 s lease in a way that `crash` can kill like a kill -9. */
  registerCrashable: (id: string) => Promise<() => Promise<void>>;
}

function contract(name: string, open: () => Promise<Harness>): void {
  describe(`${name} registry`, () => {
    let registry: ClusterRegistry;
    let registerCrashable: Harness['registerCrashable'];
    beforeAll(async () => ({ registry, registerCrashable } = await open()));
    afterAll(async () => registry?.close());

    it('lists and watches shards as they register, update and leave', async () => {
      const seen: string[][] = [];
      const stop = await registry.watchShards((s) => seen.push(s.map((r) => `${r.shardId}:${r.health}`).sort()));
      const a = await registry.registerShard(record('a'), 5);
      await until(async () => seen.at(-1)?.join() === 'a:SERVING');
      await a.update(record('a', { health: 'NOT_SERVING' }));
      await until(async () => seen.at(-1)?.join() === 'a:NOT_SERVING');
      expect((await registry.listShards()).map((r) => r.health)).toEqual(['NOT_SERVING']);
      await a.close();
      await until(async () => seen.at(-1)?.length === 0);
      await stop();
    });

    it('removes a shard whose keep-alive stops (a crash) once its lease runs out', async () => {
      const crash = await registerCrashable('b');
      await until(async () => (await registry.listShards()).some((r) => r.shardId === 'b'));
      const crashedAt = Date.now();
      await crash();
      await until(async () => !(await registry.listShards()).some((r) => r.shardId === 'b'));
      expect(Date.now() - crashedAt).toBeGreaterThanOrEqual(1000);
    });

    it('keeps a registration past its TTL when renewed at the given keep-alive interval', async () => {
      const c = await registry.registerShard(record('c'), 2, 0.5);
      await new Promise((r) => setTimeout(r, 3500));
      expect((await registry.listShards()).some((r) => r.shardId === 'c')).toBe(true);
      await c.close();
      await until(async () => !(await registry.listShards()).some((r) => r.shardId === 'c'));
    });

    it('a shard id held by a live registration is not taken over, and closing the refused one leaves it', async () => {
      const first = await registry.registerShard(record('dup', { address: '127.0.0.1:7001' }), 5);
      await expect(registry.registerShard(record('dup', { address: '127.0.0.1:7002' }), 5)).rejects.toThrow(RegistryConflictError);
      expect((await registry.listShards()).find((r) => r.shardId === 'dup')?.address).toBe('127.0.0.1:7001');
      await first.close();
      await until(async () => !(await registry.listShards()).some((r) => r.shardId === 'dup'));
    });

    it('a holder judged gone (a dead process whose lease still runs) is replaced at once; one judged alive is not', async () => {
      const dead = await registry.registerShard(record('stale', { address: '127.0.0.1:7003' }), 30);
      const judged: string[] = [];
      await expect(registry.registerShard(record('stale', { address: '127.0.0.1:7004' }), 30, undefined, async (h) => (judged.push(h.address), false))).rejects.toThrow(RegistryConflictError);
      const next = await registry.registerShard(record('stale', { address: '127.0.0.1:7005' }), 30, undefined, async (h) => (judged.push(h.address), true));
      expect(judged).toEqual(['127.0.0.1:7003', '127.0.0.1:7003']);
      await until(async () => (await registry.listShards()).find((r) => r.shardId === 'stale')?.address === '127.0.0.1:7005');
      await next.close();
      await dead.close();
    });

    it('a plan slot is claimed atomically with the shard id: of four shards racing for it, exactly one wins', async () => {
      const racers = ['race-a', 'race-b', 'race-c', 'race-d'];
      const outcomes = await Promise.allSettled(racers.map((id, i) => registry.registerShard(record(id, { slot: 'slot-x', address: `127.0.0.1:${7100 + i}` }), 5)));
      const won = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
      expect(won).toHaveLength(1);
      for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(SlotTakenError);
      const holders = (await registry.listShards()).filter((r) => r.slot === 'slot-x');
      expect(holders).toHaveLength(1);
      // The slot stays with its registration (an update cannot move it), and is free once its holder leaves.
      await expect(won[0]!.update({ ...holders[0]!, slot: 'slot-y' })).rejects.toThrow(RegistryConflictError);
      await won[0]!.close();
      const next = await registry.registerShard(record('race-e', { slot: 'slot-x' }), 5);
      expect((await registry.listShards()).filter((r) => r.slot === 'slot-x').map((r) => r.shardId)).toEqual(['race-e']);
      await next.close();
    });

    it('plans are written with compare-and-swap: a stale writer gets a conflict, never a silent replace', async () => {
      const plan = (version: number) => ({ version, modelFingerprint: 'f00', shards: { s0: [{ layer: 1, experts: [version] }] } });
      const current = (await registry.getPlan())?.version ?? null;
      await registry.putPlan(plan((current ?? 0) + 1), { replaces: current });
      // Two writers read the same version; the second to write loses.
      const read = (await registry.getPlan())!.version;
      await registry.putPlan(plan(read + 1), { replaces: read });
      await expect(registry.putPlan(plan(read + 1), { replaces: read })).rejects.toThrow(RegistryConflictError);
      // Create-if-absent when a plan exists, and an older version, are refused too.
      await expect(registry.putPlan(plan(99), { replaces: null })).rejects.toThrow(RegistryConflictError);
      await expect(registry.putPlan(plan(read))).rejects.toThrow(RegistryConflictError);
      expect((await registry.getPlan())!.version).toBe(read + 1);
    });

    it('stores and watches the placement plan', async () => {
      const plans: (number | null)[] = [];
      const stop = await registry.watchPlan((p) => plans.push(p?.version ?? null));
      const base = (await registry.getPlan())?.version ?? 0;
      await registry.putPlan({ version: base + 1, modelFingerprint: 'f00', shards: { s0: [{ layer: 1, experts: [0] }] } });
      await registry.putPlan({ version: base + 2, modelFingerprint: 'f00', shards: { s0: [{ layer: 1, experts: [1] }] } });
      await until(async () => plans.at(-1) === base + 2);
      expect((await registry.getPlan())?.shards.s0).toEqual([{ layer: 1, experts: [1] }]);
      await stop();
    });
  });
}

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await EtcdServer.start();
});
afterAll(async () => etcd?.stop());

/** A real process that registers, to be killed with -9. */
async function registerInProcess(args: string[], env: Record<string, string> = {}): Promise<() => Promise<void>> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'helpers', 'register-shard-process.ts'), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  await new Promise<void>((resolve) => createInterface({ input: child.stdout! }).once('line', () => resolve()));
  return async () => {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  };
}

contract('etcd', async () => ({
  registry: new EtcdRegistry([etcd.url], 'contract'),
  registerCrashable: (id) => registerInProcess(['etcd', etcd.url, 'contract', id, '2']),
}));

let server: RegistryServer;
afterAll(async () => server?.close());

describe('embedded registry server', () => {
  it('asks for its token, caps request bodies, and binds loopback', async () => {
    const s = await RegistryServer.start(new MemoryRegistry());
    try {
      expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect((await fetch(`${s.url}/v1/shards`)).status).toBe(401);
      expect((await fetch(`${s.url}/v1/shards`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
      expect((await fetch(`${s.url}/v1/shards`, { headers: { authorization: `Bearer ${s.token}` } })).status).toBe(200);
      await expect(new HttpRegistry(s.url, 'wrong').listShards()).rejects.toThrow(/refused this process's token/);
      const huge = JSON.stringify({ record: record('x'), ttlSeconds: 5, pad: 'x'.repeat(5 * 2 ** 20) });
      const res = await fetch(`${s.url}/v1/shards`, { method: 'POST', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' }, body: huge });
      expect(res.status).toBe(413);
      expect((await fetch(`${s.url}/v1/shards`, { headers: { authorization: `Bearer ${s.token}` } })).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});
contract('embedded, served over HTTP to other processes', async () => {
  server = await RegistryServer.start(new MemoryRegistry());
  return {
    registry: new HttpRegistry(server.url, server.token),
    registerCrashable: (id) => registerInProcess(['http', server.url, '-', id, '2'], { EXPERTMESH_REGISTRY_TOKEN: server.token }),
  };
});

const memory = new MemoryRegistry();
contract('embedded (in-memory)', async () => ({
  registry: memory,
  // In one process, a crash is the keep-alive stopping without the entry being removed.
  registerCrashable: async (id) => {
    const r = await memory.registerShard(record(id), 2);
    return async () => (r as unknown as { abandon: () => void }).abandon();
  },
}));
