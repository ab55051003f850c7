import { describe, expect, it, vi } from 'vitest';
import { MemoryRegistry, type PlacementPlan, type ShardRecord } from '../src/index.js';
import { coalescedDelivery } from '../src/watch-pace.js';

const plan = (version: number): PlacementPlan => ({ version, modelFingerprint: 'f00', shards: { s0: [{ layer: 1, experts: [0, 1] }] } });
const record = (id: string, planVersion: number): ShardRecord => ({ shardId: id, address: '127.0.0.1:7000', modelFingerprint: 'f00', layers: [{ layer: 1, experts: [0, 1] }], computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion, slot: '' });

/** A pace the test opens by hand, counting how often it is asked. */
function handPace(): { pace: () => Promise<void>; open: () => void; asked: () => number } {
  let asked = 0;
  let waiting: (() => void)[] = [];
  return {
    pace: () => (asked++, new Promise<void>((resolve) => waiting.push(resolve))),
    open: () => {
      const now = waiting;
      waiting = [];
      now.forEach((resume) => resume());
    },
    asked: () => asked,
  };
}

const turns = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('a paced registry watch (the in-memory registry; etcd: test/discovery/*-watch-reads.test.ts)', () => {
  it('delivers nothing until the pace allows, then the newest plan once', async () => {
    const registry = new MemoryRegistry();
    await registry.putPlan(plan(1));
    const { pace, open, asked } = handPace();
    const seen: number[] = [];
    await registry.watchPlan((p) => seen.push(p?.version ?? 0), { pace });
    expect(seen).toEqual([]);
    open();
    await turns();
    expect(seen).toEqual([1]);
    for (const v of [2, 3, 4]) await registry.putPlan(plan(v));
    await turns();
    expect(seen).toEqual([1]);
    expect(asked()).toBe(2);
    open();
    await turns();
    expect(seen).toEqual([1, 4]);
    await registry.close();
  });

  it('delivers the newest records once the pace allows', async () => {
    const registry = new MemoryRegistry();
    const { pace, open } = handPace();
    const seen: string[][] = [];
    await registry.watchShards((s) => seen.push(s.map((r) => `${r.shardId}@${r.planVersion}`)), { pace });
    open();
    await turns();
    expect(seen).toEqual([[]]);
    const a = await registry.registerShard(record('a', 1), 30);
    await a.update(record('a', 2));
    await registry.registerShard(record('b', 1), 30);
    await turns();
    expect(seen).toEqual([[]]);
    open();
    await turns();
    expect(seen).toEqual([[], ['a@2', 'b@1']]);
    await registry.close();
  });

  it('without a pace, calls the listener as before: at once, for every change', async () => {
    const registry = new MemoryRegistry();
    const seen: number[] = [];
    await registry.watchPlan((p) => seen.push(p?.version ?? 0));
    for (const v of [1, 2, 3]) await registry.putPlan(plan(v));
    expect(seen).toEqual([0, 1, 2, 3]);
    await registry.close();
  });

  it('reports what a delivery throws and goes on; a pace that rejects still delivers', async () => {
    const errors = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      let calls = 0;
      const deliver = coalescedDelivery(() => {
        calls++;
        if (calls === 1) throw new Error('not a plan');
      }, () => Promise.reject(new Error('no step end')));
      deliver();
      await turns();
      deliver();
      await turns();
      expect(calls).toBe(2);
      expect(errors.mock.calls.map((c) => String(c[0])).filter((l) => l.includes('not a plan'))).toHaveLength(1);
    } finally {
      errors.mockRestore();
    }
  });
});
