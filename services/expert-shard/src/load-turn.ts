import { loadingPlan, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
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
    return hostOf(r.address) === host && loadingPlan(r, plan);
  });
}
