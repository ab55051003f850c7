import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdRegistry, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { startRegistryFollower, type RegistryChange } from '../../bench/registry-follower.js';
import { EtcdServer } from '../helpers/etcd-server.js';

// bench:rebalance follows the plan and the shard records from a child process at the lowest priority, so that the
// watches' work neither delays the client loops' token timestamps nor takes the shards' core at a switch. Real etcd.

const plan = (version: number): PlacementPlan => ({ version, modelFingerprint: 'f00', shards: { 'shard-0': [{ layer: 1, experts: [0, version] }] } });
const record = (planVersion: number): ShardRecord => ({
  shardId: 'a',
  address: '127.0.0.1:6001',
  modelFingerprint: 'f00',
  layers: [{ layer: 1, experts: [0, planVersion] }],
  computeDtype: 'float32',
  weightBytes: 10,
  health: 'SERVING',
  planVersion,
  slot: 'shard-0',
});

const until = async (what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('the bench registry follower (bench/registry-follower.ts)', () => {
  let etcd: EtcdServer;
  let registry: EtcdRegistry;

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], 'follow');
  });
  afterAll(async () => {
    await registry?.close();
    await etcd?.stop();
  });

  it('delivers the plan and the records as they are, then every change in order with its time, at autogroup nice 19, and stops', async () => {
    await registry.putPlan(plan(1));
    const registration = await registry.registerShard(record(1), 30);
    const changes: RegistryChange[] = [];
    const startedAt = Date.now();
    const follower = await startRegistryFollower(etcd.url, 'follow', (c) => changes.push(c));
    try {
      // Ready means both watches delivered: the stored plan and record are already here.
      expect(changes.some((c) => 'plan' in c && c.plan?.version === 1)).toBe(true);
      expect(changes.some((c) => 'records' in c && c.records.length === 1 && c.records[0]!.planVersion === 1)).toBe(true);

      await registry.putPlan(plan(2), { replaces: 1 });
      await until('plan 2', () => changes.some((c) => 'plan' in c && c.plan?.version === 2));
      await registration.update(record(2));
      await until('record of plan 2', () => changes.some((c) => 'records' in c && c.records[0]?.planVersion === 2));
      const plan2 = changes.find((c) => 'plan' in c && c.plan?.version === 2)!;
      const record2 = changes.find((c) => 'records' in c && c.records[0]?.planVersion === 2)!;
      expect('plan' in plan2 && plan2.plan).toEqual(plan(2));
      expect('records' in record2 && record2.records).toEqual([record(2)]);
      // Times are the child's, in epoch ms: after the follower's start, in the order the changes were made.
      expect(plan2.atEpochMs).toBeGreaterThanOrEqual(startedAt);
      expect(record2.atEpochMs).toBeGreaterThanOrEqual(plan2.atEpochMs);
      expect(record2.atEpochMs).toBeLessThanOrEqual(Date.now());

      const autogroups = existsSync('/proc/sys/kernel/sched_autogroup_enabled') && readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';
      if (autogroups) {
        expect(follower.autogroupNice).toBe(19);
        // The kernel rate-limits autogroup writes: the lowering may land a tenth of a second later.
        await until('autogroup at nice 19', () => /nice 19\b/.test(readFileSync(`/proc/${follower.pid}/autogroup`, 'utf8')));
      } else {
        expect(follower.autogroupNice).toBeNull();
      }
      expect(readFileSync(`/proc/${process.pid}/autogroup`, 'utf8')).not.toMatch(/nice 19\b/);
    } finally {
      await follower.stop();
    }
    expect(alive(follower.pid)).toBe(false);
    await registration.close();
  });

  it('fails with a clear error when the child cannot follow the registry', async () => {
    // Nothing listens on port 1: the child's first read never succeeds, and it is stopped when the wait ends.
    await expect(startRegistryFollower('http://127.0.0.1:1', 'follow', () => undefined, 3_000)).rejects.toThrow(/registry follower (was not ready|exited)/);
  });
});
