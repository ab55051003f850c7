import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementPlanError } from './placement-planner.js';
import { replanMembership } from './membership-planner.js';
import { redundantCopies, type ExpertLoad, type Replan } from './rebalance-planner.js';
import type { PlacementPlan, ShardRecord } from './records.js';

type PlanConfig = Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>;

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
 * The plan for a changed set of slots (a shard joining, leaving, or dead for good), from the one in
 * force: only the member's experts move (`replanMembership`: a new slot takes experts from the busiest
 * slots, a gone slot's experts go to the least busy ones that lack them), weighed by the load and
 * within the memory budget the plan was made with. The closed loop evens out what is left later, by
 * its own threshold; `expertmesh plan` re-plans the whole placement.
 */
export function replanMembers(config: PlanConfig, current: PlacementPlan, slots: readonly string[], records: readonly ShardRecord[]): Replan {
  const load = loadFromBasis(current);
  const next = replanMembership({
    config,
    version: current.version + 1,
    current,
    slots,
    ...(load ? { expertLoad: load } : {}),
    bytesPerExpert: measuredExpertBytes(records) || current.basis?.expertBytes || 0,
    ...(current.basis?.shardMemoryBytes !== undefined ? { memoryBudgetBytes: current.basis.shardMemoryBytes } : {}),
  });
  return { ...next, plan: { ...next.plan, ...(current.basis ? { basis: current.basis } : {}) } };
}

/**
 * The plan for the slots that remain when `gone` leave the one in force (a shard leaving, or one
 * dead for good): their experts, and only those, re-homed on the others within each shard's memory
 * budget. Every expert keeps a holder; the gone slots' redundant copies are re-homed where they fit
 * (the hottest per copy first) and dropped where they do not. Returns, beside the plan, the redundant
 * copies per layer it keeps.
 */
export function replanWithout(config: PlanConfig, current: PlacementPlan, gone: readonly string[], records: readonly ShardRecord[]): Replan & { readonly redundantExperts: number } {
  const rest = Object.keys(current.shards).filter((s) => !gone.includes(s));
  if (rest.length === 0) throw new PlacementPlanError(`a plan without ${gone.join(', ')} has no shard left`);
  const next = replanMembers(config, current, rest, records);
  return { ...next, redundantExperts: redundantCopies(next.plan, config) };
}
