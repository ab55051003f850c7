import { describe, expect, it } from 'vitest';
import type { PlacementPlan, ShardRecord } from '@expertmesh/discovery';
import { keptElsewhere, switchingBefore } from '@expertmesh/discovery';
import { loadingBefore } from '../src/load-turn.js';

const plan: PlacementPlan = {
  version: 2,
  modelFingerprint: 'fp',
  shards: {
    a: [{ layer: 1, experts: [0, 1] }],
    b: [{ layer: 1, experts: [2, 3] }],
    c: [{ layer: 1, experts: [4, 5] }],
  },
} as PlacementPlan;

const record = (slot: string, address: string, experts: number[], extra: Partial<ShardRecord> = {}): ShardRecord => ({
  shardId: `shard-${slot}`,
  address,
  modelFingerprint: 'fp',
  layers: [{ layer: 1, experts }],
  computeDtype: 'float32',
  weightBytes: 1,
  health: 'SERVING',
  planVersion: 1,
  slot,
  ...extra,
});

/** Slot c on host 10.0.0.3, and shards no turn waits for: another host, another model, draining, not serving, no slot, a slot the plan does not have. */
const self = record('c', '10.0.0.3:7003', [9]);
const others = [
  record('a', '10.0.0.1:7001', [9]),
  record('b', '10.0.0.3:7002', [9], { modelFingerprint: 'other' }),
  record('a', '10.0.0.3:7004', [9], { shardId: 'x', draining: true }),
  record('b', '10.0.0.3:7005', [9], { shardId: 'y', health: 'NOT_SERVING' }),
  record('', '10.0.0.3:7006', [9], { shardId: 'z' }),
  record('0', '10.0.0.3:7007', [9], { shardId: 'w' }),
];

describe('co-located shards load a new plan one at a time', () => {
  it('waits for earlier slots on the same host that do not yet advertise their experts of the plan', () => {
    const a = record('a', '127.0.0.1:7001', [9]);
    const b = record('b', '127.0.0.1:7002', [9]);
    const c = record('c', '127.0.0.1:7003', [9]);
    const all = [a, b, c];
    expect(loadingBefore(a, plan, all)).toEqual([]);
    expect(loadingBefore(b, plan, all).map((r) => r.slot)).toEqual(['a']);
    expect(loadingBefore(c, plan, all).map((r) => r.slot)).toEqual(['a', 'b']);
  });

  it("goes on once they advertise the plan's experts (old ones beside them), and never waits for a later slot", () => {
    const a = record('a', '127.0.0.1:7001', [0, 1, 9]);
    const b = record('b', '127.0.0.1:7002', [9]);
    const c = record('c', '127.0.0.1:7003', [9]);
    expect(loadingBefore(b, plan, [a, b, c])).toEqual([]);
    expect(loadingBefore(c, plan, [a, b, c]).map((r) => r.slot)).toEqual(['b']);
  });

  it('does not wait for an earlier slot that already published this plan version without its experts (it finished, or gave up)', () => {
    const a = record('a', '127.0.0.1:7001', [9], { planVersion: plan.version });
    const b = record('b', '127.0.0.1:7002', [9]);
    expect(loadingBefore(b, plan, [a, b])).toEqual([]);
    expect(loadingBefore(b, plan, [{ ...a, planVersion: plan.version - 1 }, b]).map((r) => r.slot)).toEqual(['a']);
  });

  it('does not wait for shards on other hosts, of another model, draining, not serving, or without a slot in the plan', () => {
    expect(loadingBefore(self, plan, [self, ...others])).toEqual([]);
  });
});

describe('co-located shards ready to switch at one moment write their switch records one step end apart', () => {
  it('waits one step end for each earlier slot on its host that has not written a record of the plan version, none for later slots', () => {
    const a = record('a', '127.0.0.1:7001', [0, 1]);
    const b = record('b', '127.0.0.1:7002', [2, 3]);
    const c = record('c', '127.0.0.1:7003', [4, 5]);
    expect(switchingBefore(a, plan, [a, b, c])).toEqual([]);
    expect(switchingBefore(c, plan, [a, b, c]).map((r) => r.slot)).toEqual(['a', 'b']);
    // a switched already: c waits only for b.
    expect(switchingBefore(c, plan, [{ ...a, planVersion: plan.version }, b, c]).map((r) => r.slot)).toEqual(['b']);
  });

  it('does not wait for shards on other hosts, of another model, draining, not serving, or whose slot the plan does not have', () => {
    expect(switchingBefore(self, plan, [self, ...others])).toEqual([]);
  });
});

describe('a shard gives up an expert only to a shard that keeps it in the plan', () => {
  // Expert 9 is held by a and b today; the plan moves it to c alone (a keeps 0,1; b keeps 2,3; c gains 4,5,9).
  const moved: PlacementPlan = { ...plan, shards: { ...plan.shards, c: [{ layer: 1, experts: [4, 5, 9] }] } } as PlacementPlan;
  const a = record('a', '127.0.0.1:7001', [0, 1, 9]);
  const b = record('b', '127.0.0.1:7002', [2, 3, 9]);
  const given = [{ layer: 1, experts: [9] }];

  it('does not count a shard that gives the same expert up in the same plan', () => {
    // Before: each saw the other advertising 9, both switched, and 9 had no holder until c loaded it.
    expect(keptElsewhere(a, moved, [a, b, record('c', '127.0.0.1:7003', [4, 5])], given)).toBe(false);
    expect(keptElsewhere(b, moved, [a, b, record('c', '127.0.0.1:7003', [4, 5])], given)).toBe(false);
  });

  it("counts the plan's holder once it advertises the expert, old plan version or not", () => {
    const c = record('c', '127.0.0.1:7003', [4, 5, 9]);
    expect(keptElsewhere(a, moved, [a, b, c], given)).toBe(true);
    expect(keptElsewhere(b, moved, [a, b, c], given)).toBe(true);
  });

  it('does not count a keeper that is draining, not serving, of another model, or itself', () => {
    for (const extra of [{ draining: true }, { health: 'NOT_SERVING' as const }, { modelFingerprint: 'other' }]) {
      expect(keptElsewhere(a, moved, [a, b, record('c', '127.0.0.1:7003', [4, 5, 9], extra)], given)).toBe(false);
    }
    const selfKeeps: PlacementPlan = { ...moved, shards: { ...moved.shards, a: [{ layer: 1, experts: [0, 1, 9] }] } } as PlacementPlan;
    expect(keptElsewhere(a, selfKeeps, [a, b], given)).toBe(false);
  });
});
