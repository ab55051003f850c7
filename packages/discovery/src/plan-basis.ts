import type { ModelConfig } from '@expertmesh/model-config';
import { replan, type ExpertLoad, type Replan } from './rebalance-planner.js';
import type { PlacementPlan, ShardRecord } from './records.js';

/** Bytes one expert takes as shards really hold it (their records: weight bytes over experts held), 0 when no shard holds any. */
export function measuredExpertBytes(records: readonly ShardRecord[]): number {
  return Math.max(0, ...records.map((r) => r.weightBytes / Math.max(1, r.layers.reduce((a, l) => a + l.experts.length, 0))));
}

/** The load a plan was made with (uniform when it carries none). */
export function loadFromBasis(plan: PlacementPlan): ExpertLoad | undefined {
  const load = plan.basis?.expertLoad;
  return load ? (layer, e) => load[String(layer)]?.[e] ?? 0 : undefined;
}

/**
 * The plan for a changed set of slots (a shard joining or leaving), from the one in force: the same
 * load, copies and memory budget it was made with, fewest experts moved.
 */
export function replanMembers(config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>, current: PlacementPlan, slots: readonly string[], records: readonly ShardRecord[]): Replan {
  const load = loadFromBasis(current);
  const bytesPerExpert = measuredExpertBytes(records) || current.basis?.expertBytes || 0;
  const next = replan({
    config,
    modelFingerprint: current.modelFingerprint,
    version: current.version + 1,
    current,
    slots,
    ...(load ? { expertLoad: load } : {}),
    bytesPerExpert,
    ...(current.basis?.shardMemoryBytes !== undefined ? { memoryBudgetBytes: current.basis.shardMemoryBytes } : {}),
  });
  return { ...next, plan: { ...next.plan, ...(current.basis ? { basis: current.basis } : {}) } };
}
