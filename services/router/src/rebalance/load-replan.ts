import { planImbalance, replan, replanWithinBudget, type PlacementPlan } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';

/**
 * Everything the closed loop's re-plan needs, as plain data: it crosses to the planner's worker thread
 * by structured clone (a plan of a few KB and one Float64Array of layers × experts).
 */
export interface LoadReplanInput {
  readonly config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>;
  readonly fingerprint: string;
  /** The plan read from the registry, which the next one replaces. */
  readonly current: PlacementPlan;
  /** Tokens per expert in the load window: row `i` (nRoutedExperts long) is `config.moeLayers[i]`. */
  readonly load: Float64Array;
  /** Bytes per expert as the shards hold them (their records), else as the plan was made with. */
  readonly bytesPerExpert: number;
  /** Re-plan only when some layer's max over mean tokens per shard passes this. */
  readonly threshold: number;
}

export interface LoadReplanOutput {
  /** Imbalance per MoE layer of the current plan under the load: [layer, imbalance]. */
  readonly before: ReadonlyArray<readonly [number, number]>;
  /** The plan to store, or null when the load is even enough or a re-plan would not pay. */
  readonly change: {
    readonly plan: PlacementPlan;
    readonly movedExperts: number;
    readonly movedBytes: number;
    readonly after: ReadonlyArray<readonly [number, number]>;
    /** Redundant copies per layer the plan gives: the current plan's, or fewer when those do not fit the memory budget. */
    readonly redundantExperts: number;
    /** The copies asked for: the current plan's. */
    readonly redundantAsked: number;
  } | null;
}

export const worstImbalance = (m: Iterable<readonly [number, number]>): number => Math.max(1, ...[...m].map(([, v]) => v));

/** The window's snapshot as the planner's input row layout (one row per MoE layer, in `moeLayers` order). */
export function loadRows(config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>, snapshot: ReadonlyMap<number, readonly number[]>): Float64Array {
  const E = config.nRoutedExperts;
  const rows = new Float64Array(config.moeLayers.length * E);
  config.moeLayers.forEach((layer, i) => {
    const row = snapshot.get(layer);
    for (let e = 0; e < E; e++) rows[i * E + e] = row?.[e] ?? 0;
  });
  return rows;
}

/**
 * The closed loop's decision, pure (input → plan): weigh the load against the plan in force and, when
 * its worst layer passes the threshold and a re-plan lowers it clearly, the next plan (fewest experts
 * moved) with the load it was made with as its basis. Runs in the planner's worker thread.
 * Within the plan's memory budget (`basis.shardMemoryBytes`) as `expertmesh plan` plans: the current plan's
 * redundant copies when they fit, else the most that do (the hottest experts keep theirs), so a plan over
 * the budget is never stored. Throws PlacementPlanError only when not even one copy of each expert fits.
 */
export function decideLoadReplan(input: LoadReplanInput): LoadReplanOutput {
  const { config, current } = input;
  const E = config.nRoutedExperts;
  const rowOf = new Map(config.moeLayers.map((layer, i) => [layer, i]));
  const load = (layer: number, e: number): number => {
    const i = rowOf.get(layer);
    return i === undefined || e < 0 || e >= E ? 0 : input.load[i * E + e]!;
  };
  const before = [...planImbalance(current, config, load)];
  if (worstImbalance(before) < input.threshold) return { before, change: null };
  const next = replanWithinBudget({
    config,
    modelFingerprint: input.fingerprint,
    version: current.version + 1,
    current,
    slots: Object.keys(current.shards),
    expertLoad: load,
    bytesPerExpert: input.bytesPerExpert,
    ...(current.basis?.shardMemoryBytes !== undefined ? { memoryBudgetBytes: current.basis.shardMemoryBytes } : {}),
  });
  const expertLoad = Object.fromEntries(config.moeLayers.map((layer) => [String(layer), Array.from({ length: E }, (_, e) => load(layer, e))]));
  const plan: PlacementPlan = { ...next.plan, basis: { ...current.basis, expertLoad, expertBytes: input.bytesPerExpert } };
  const after = [...planImbalance(plan, config, load)];
  // Moving experts costs loads and memory: only for a clear gain.
  if (!(worstImbalance(after) < worstImbalance(before) * 0.95)) return { before, change: null };
  return { before, change: { plan, movedExperts: next.movedExperts, movedBytes: next.movedBytes, after, redundantExperts: next.redundantExperts, redundantAsked: next.redundantAsked } };
}

/**
 * A re-plan of the model's own shape that changes something (4 shards, one expert in four of each layer hot,
 * threshold 1), planned once when the planner thread starts: its code (the imbalance, the re-plan, the basis)
 * is then compiled and warm before a real load asks for it, and the one plan that matters is not the thread's
 * first. Its result is thrown away.
 */
export function warmUpInput(config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>, fingerprint: string): LoadReplanInput {
  const E = config.nRoutedExperts;
  const current = replan({ config, modelFingerprint: fingerprint, version: 1, current: null, slots: ['warm-0', 'warm-1', 'warm-2', 'warm-3'], redundantExperts: Math.floor(E / 5), bytesPerExpert: 1 }).plan;
  const load = new Float64Array(config.moeLayers.length * E).map((_, i) => (i % 4 === 0 ? 400 : 20));
  return { config, fingerprint, current, load, bytesPerExpert: 1, threshold: 1 };
}
