import type { PlacementPlan, ShardRecord } from '@expertmesh/discovery';
import { hostOf } from '@expertmesh/security';

/**
 * The shards `self` waits for before it loads its experts of `plan`: live shards of the same model on
 * the same host (they share its cores) whose slot comes first and which do not yet advertise every
 * expert the plan gives them while still on an earlier plan version (still loading). A shard that
 * already published this plan's version has finished with it (switched, or kept its old experts when
 * the hand-over timed out) and is not waited for, whatever it advertises. So co-located shards compile one at a time, in slot
 * order, and a host's serving never waits on several compiles at once; shards on other hosts load in
 * parallel. Slot order is total, so no two shards wait for each other.
 */
export function loadingBefore(self: ShardRecord, plan: PlacementPlan, records: readonly ShardRecord[]): ShardRecord[] {
  const host = hostOf(self.address);
  return records.filter((r) => {
    if (!r.slot || !self.slot || r.slot >= self.slot) return false;
    if (r.shardId === self.shardId || r.modelFingerprint !== self.modelFingerprint || r.health !== 'SERVING' || r.draining) return false;
    if (hostOf(r.address) !== host || r.planVersion >= plan.version) return false;
    const target = plan.shards[r.slot];
    return target !== undefined && !advertisesAll(r, target);
  });
}

function advertisesAll(record: ShardRecord, target: readonly { layer: number; experts: readonly number[] }[]): boolean {
  const held = new Map(record.layers.map((l) => [l.layer, new Set(l.experts)]));
  return target.every((l) => l.experts.every((e) => held.get(l.layer)?.has(e) ?? false));
}
