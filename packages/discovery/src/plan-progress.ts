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
