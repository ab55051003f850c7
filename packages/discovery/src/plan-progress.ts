import { hostOf } from '@expertmesh/security';
import type { PlacementPlan, ShardRecord } from './records.js';

type Layers = readonly { readonly layer: number; readonly experts: readonly number[] }[];

/** Whether the record advertises every expert of `target`. */
export function advertisesAll(record: ShardRecord, target: Layers): boolean {
  const held = new Map(record.layers.map((l) => [l.layer, new Set(l.experts)]));
  return target.every((l) => l.experts.every((e) => held.get(l.layer)?.has(e) ?? false));
}

/**
 * Whether the shard is still loading (or waiting its turn to load) its experts of `plan`: on an
 * earlier plan version and not yet advertising everything the plan gives its slot. Such a shard
 * builds graphs and updates its record on the thread that answers calls.
 */
export function loadingPlan(record: ShardRecord, plan: PlacementPlan): boolean {
  if (!record.slot || record.planVersion >= plan.version) return false;
  const target = plan.shards[record.slot];
  return target !== undefined && !advertisesAll(record, target);
}

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
  return records.filter((r) => earlierOnHost(self, host, r) && loadingPlan(r, plan));
}

/** Whether `r` is another live, serving, not draining shard of `self`'s model: one that can serve in its place. */
export function servingPeerOf(self: ShardRecord, r: ShardRecord): boolean {
  return r.shardId !== self.shardId && r.modelFingerprint === self.modelFingerprint && r.health === 'SERVING' && !r.draining;
}

/** Whether `r` is a serving peer of `self` on `host` whose slot comes before `self`'s. */
function earlierOnHost(self: ShardRecord, host: string, r: ShardRecord): boolean {
  if (!r.slot || !self.slot || r.slot >= self.slot) return false;
  return servingPeerOf(self, r) && hostOf(r.address) === host;
}

/**
 * The shards loading their experts of `plan` right now: each loading (see loadingPlan) and first in
 * its host's turn (no earlier slot on its host still loading, as loadingBefore decides for the shard
 * itself). A shard waiting for its turn serves as usual; the one compiling stalls its answers.
 */
export function loadingNow(plan: PlacementPlan, records: readonly ShardRecord[]): ShardRecord[] {
  return records.filter((r) => loadingPlan(r, plan) && loadingBefore(r, plan, records).length === 0);
}

/**
 * The shards on `self`'s host, with an earlier slot of `plan`, that have not yet written a record of `plan`'s
 * version: shards of one host that become ready to switch at one moment write their switch records one step
 * end apart, in slot order (the shard waits one step end per shard returned). Live serving shards of the same
 * model only; slot order is total, so no two shards wait for each other.
 */
export function switchingBefore(self: ShardRecord, plan: PlacementPlan, records: readonly ShardRecord[]): ShardRecord[] {
  const host = hostOf(self.address);
  return records.filter((r) => earlierOnHost(self, host, r) && r.slot in plan.shards && r.planVersion < plan.version);
}

/**
 * Whether every expert of `layers` is advertised by another live, serving, not draining shard of `self`'s
 * model whose slot keeps that expert in `plan`: only then may `self` stop serving it. A shard that holds
 * it now but gives it up in the same plan does not count: two shards giving up one expert would each see
 * the other still advertising it, both switch, and leave it held by no one until its new holder loads.
 */
export function keptElsewhere(self: ShardRecord, plan: PlacementPlan, records: readonly ShardRecord[], layers: Layers): boolean {
  const kept = new Set<string>();
  for (const r of records) {
    const target = servingPeerOf(self, r) && r.slot ? plan.shards[r.slot] : undefined;
    if (!target) continue;
    const keeps = new Map(target.map((l) => [l.layer, new Set(l.experts)]));
    for (const l of r.layers) for (const e of l.experts) if (keeps.get(l.layer)?.has(e)) kept.add(`${l.layer}/${e}`);
  }
  return layers.every((l) => l.experts.every((e) => kept.has(`${l.layer}/${e}`)));
}
