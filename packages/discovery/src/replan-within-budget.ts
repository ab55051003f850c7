import { PlacementPlanError } from './placement-planner.js';
import { redundantCopies, replan, type Replan, type ReplanRequest } from './rebalance-planner.js';

export interface BudgetedReplan extends Replan {
  /** Redundant copies per layer the plan gives: the ones asked for, or fewer when those did not fit the budget. */
  readonly redundantExperts: number;
  /** The copies asked for (the request's, else the current plan's). */
  readonly redundantAsked: number;
}

/**
 * `replan` within the memory budget, giving up redundant copies before failing: with the copies asked
 * for when they fit, else with the most that fit (binary search; each copy fewer frees one expert of
 * memory per layer, so fewer copies fit whenever more do). Throws the planner's PlacementPlanError only
 * when not even one copy of each expert fits.
 */
export function replanWithinBudget(req: ReplanRequest): BudgetedReplan {
  const asked = req.redundantExperts ?? redundantCopies(req.current, req.config);
  const attempt = (copies: number): Replan | PlacementPlanError => {
    try {
      return replan({ ...req, redundantExperts: copies });
    } catch (e) {
      if (e instanceof PlacementPlanError) return e;
      throw e;
    }
  };
  const full = attempt(asked);
  if (!(full instanceof PlacementPlanError)) return { ...full, redundantExperts: asked, redundantAsked: asked };
  if (req.memoryBudgetBytes === undefined || asked === 0) throw full;
  const none = attempt(0);
  if (none instanceof PlacementPlanError) throw none;
  // Invariant: `lo` copies fit (best holds that plan), `hi` copies do not.
  let lo = 0;
  let hi = asked;
  let best: Replan = none;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const r = attempt(mid);
    if (r instanceof PlacementPlanError) hi = mid;
    else [lo, best] = [mid, r];
  }
  return { ...best, redundantExperts: lo, redundantAsked: asked };
}
