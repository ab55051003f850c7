import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementPlanError } from './placement-planner.js';
import { redundantCopies, replan, type ExpertLoad, type Replan } from './rebalance-planner.js';
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
export function replanMembers(
  config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>,
  current: PlacementPlan,
  slots: readonly string[],
  records: readonly ShardRecord[],
  redundantExperts?: number,
): Replan {
  const load = loadFromBasis(current);
  const bytesPerExpert = measuredExpertBytes(records) || current.basis?.expertBytes || 0;
  const next = replan({
    config,
    modelFingerprint: current.modelFingerprint,
    version: current.version + 1,
    current,
    slots,
    ...(load ? { expertLoad: load } : {}),
    ...(redundantExperts !== undefined ? { redundantExperts } : {}),
    bytesPerExpert,
    ...(current.basis?.shardMemoryBytes !== undefined ? { memoryBudgetBytes: current.basis.shardMemoryBytes } : {}),
  });
  return { ...next, plan: { ...next.plan, ...(current.basis ? { basis: current.basis } : {}) } };
}

/**
 * The plan for the slots that remain when `gone` leave the one in force (a shard leaving, or one
 * dead for good): their experts re-homed on the others, within each shard's memory budget. The
 * redundant copies of the current plan are kept when the remaining shards can hold them, else as
 * many as fit (halving): every expert keeps at least one holder before any replica is kept.
 * Returns, beside the plan, the redundant copies per layer it keeps.
 */
export function replanWithout(
  config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>,
  current: PlacementPlan,
  gone: readonly string[],
  records: readonly ShardRecord[],
): Replan & { readonly redundantExperts: number } {
  const rest = Object.keys(current.shards).filter((s) => !gone.includes(s));
  if (rest.length === 0) throw new PlacementPlanError(`a plan without ${gone.join(', ')} has no shard left`);
  // What fewer shards can hold at all: each expert at most once per shard.
  let copies = Math.min(redundantCopies(current, config), config.nRoutedExperts * (rest.length - 1));
  for (;;) {
    try {
      return { ...replanMembers(config, current, rest, records, copies), redundantExperts: copies };
    } catch (e) {
      if (!(e instanceof PlacementPlanError) || copies === 0) throw e;
      copies = Math.floor(copies / 2);
    }
  }
}
