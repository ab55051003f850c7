import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementPlanError, planSizeText } from './placement-planner.js';
import type { PlacementPlan } from './records.js';

type PlanConfig = Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>;

/** Tokens per (layer, expert), measured or assumed. */
export type ExpertLoad = (layer: number, expert: number) => number;

export interface ReplanRequest {
  readonly config: PlanConfig;
  readonly modelFingerprint: string;
  readonly version: number;
  /** The plan in force (null: plan from scratch). Its holders are kept wherever balance allows. */
  readonly current: PlacementPlan | null;
  /** The slots of the new plan: the current ones, plus joiners, minus leavers. */
  readonly slots: readonly string[];
  /** Uniform when absent. */
  readonly expertLoad?: ExpertLoad;
  /** Extra copies per layer for the hottest experts; the current plan's number when absent. */
  readonly redundantExperts?: number;
  /** Bytes one expert takes in a shard, in the format shards hold it. */
  readonly bytesPerExpert: number;
  /** Per-shard memory for experts; no limit when absent. */
  readonly memoryBudgetBytes?: number;
  /** Stop moving experts once a layer's imbalance (max over mean tokens per shard) is within this factor of the best reachable (default 1.05). */
  readonly tolerance?: number;
}

export interface Replan {
  readonly plan: PlacementPlan;
  /** Expert copies a shard must load that it did not hold under the current plan. */
  readonly movedExperts: number;
  readonly movedBytes: number;
}

/** Per slot, per layer, the set of experts held. */
type Holdings = Map<string, Map<number, Set<number>>>;

function holdingsOf(plan: PlacementPlan | null): Holdings {
  const h: Holdings = new Map();
  for (const [slot, layers] of Object.entries(plan?.shards ?? {})) h.set(slot, new Map(layers.map((l) => [l.layer, new Set(l.experts)])));
  return h;
}

/** Extra copies per layer a plan gives (the most of any layer). */
export function redundantCopies(plan: PlacementPlan | null, config: PlanConfig): number {
  let most = 0;
  for (const layer of config.moeLayers) {
    let copies = 0;
    for (const layers of Object.values(plan?.shards ?? {})) copies += layers.find((l) => l.layer === layer)?.experts.length ?? 0;
    most = Math.max(most, copies - config.nRoutedExperts);
  }
  return most;
}

/**
 * Expected tokens per slot of one layer under `plan` (an expert's tokens split evenly among its
 * holders, as the router does), and their imbalance: max over mean (1 = perfectly even).
 */
export function layerImbalance(plan: PlacementPlan, layer: number, load: ExpertLoad): { perSlot: Record<string, number>; imbalance: number } {
  const copies = new Map<number, number>();
  for (const layers of Object.values(plan.shards)) for (const e of layers.find((l) => l.layer === layer)?.experts ?? []) copies.set(e, (copies.get(e) ?? 0) + 1);
  const perSlot: Record<string, number> = {};
  for (const [slot, layers] of Object.entries(plan.shards)) {
    perSlot[slot] = (layers.find((l) => l.layer === layer)?.experts ?? []).reduce((a, e) => a + load(layer, e) / copies.get(e)!, 0);
  }
  const values = Object.values(perSlot);
  const mean = values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
  return { perSlot, imbalance: mean > 0 ? Math.max(...values) / mean : 1 };
}

/** Imbalance per MoE layer of `plan` under `load`. */
export function planImbalance(plan: PlacementPlan, config: PlanConfig, load: ExpertLoad): Map<number, number> {
  return new Map(config.moeLayers.map((layer) => [layer, layerImbalance(plan, layer, load).imbalance]));
}

/**
 * A plan for `slots` that balances expected tokens per shard within each layer, gives the extra
 * copies to the experts with the most load per copy, stays within each shard's memory, and moves as
 * few experts as it can from `current`: holders are kept, missing copies go to the least-loaded
 * shards, and then single experts move from the busiest shard to the idlest only while that lowers
 * the busiest and the layer is not yet within `tolerance` of the best it can reach (an expert's
 * tokens per copy bound how even a layer can get).
 */
export function replan(req: ReplanRequest): Replan {
  const { config, slots } = req;
  const n = slots.length;
  if (n === 0) throw new PlacementPlanError('a plan needs at least one shard');
  if (new Set(slots).size !== n) throw new PlacementPlanError('slot names must be distinct');
  const E = config.nRoutedExperts;
  const redundant = req.redundantExperts ?? redundantCopies(req.current, config);
  if (redundant > E * (n - 1)) throw new PlacementPlanError(`${redundant} redundant experts per layer exceed what ${n} shards can hold (${E * (n - 1)})`);
  const tolerance = req.tolerance ?? 1.05;
  const before = holdingsOf(req.current);
  const cap = req.memoryBudgetBytes !== undefined && req.bytesPerExpert > 0 ? Math.floor(req.memoryBudgetBytes / req.bytesPerExpert) : Infinity;
  const count = new Array<number>(n).fill(0);
  const shards: PlacementPlan['shards'] = Object.fromEntries(slots.map((s) => [s, []]));
  let moved = 0;
  config.moeLayers.forEach((layer, layerIndex) => {
    // The budget is spread over the layers still to plan, so an early layer never takes a later one's room.
    const remaining = config.moeLayers.length - layerIndex;
    const room = count.map((c) => (cap === Infinity ? Infinity : Math.ceil((cap - c) / remaining)));
    const inLayer = new Array<number>(n).fill(0);
    const full = (s: number): boolean => inLayer[s]! >= room[s]!;
    const load = Array.from({ length: E }, (_, e) => Math.max(0, req.expertLoad?.(layer, e) ?? 1));
    const wasHeld = (s: number, e: number): boolean => before.get(slots[s]!)?.get(layer)?.has(e) ?? false;
    const formerHolders = (e: number): number => slots.reduce((a, _, s) => a + (wasHeld(s, e) ? 1 : 0), 0);
    // Copies: one each, then the extras to the most load per copy (ties: experts already held more often, so fewer move).
    const copies = new Array<number>(E).fill(1);
    for (let r = 0; r < redundant; r++) {
      let pick = -1;
      for (let e = 0; e < E; e++) {
        if (copies[e]! >= n) continue;
        const better = pick < 0 || load[e]! / copies[e]! > load[pick]! / copies[pick]! || (load[e]! / copies[e]! === load[pick]! / copies[pick]! && formerHolders(e) > formerHolders(pick));
        if (better) pick = e;
      }
      copies[pick]!++;
    }
    const perCopy = (e: number): number => load[e]! / copies[e]!;
    const held: Set<number>[] = slots.map(() => new Set());
    const tokens = new Array<number>(n).fill(0);
    const add = (s: number, e: number): void => {
      held[s]!.add(e);
      tokens[s]! += perCopy(e);
      count[s]!++;
      inLayer[s]!++;
    };
    const remove = (s: number, e: number): void => {
      held[s]!.delete(e);
      tokens[s]! -= perCopy(e);
      count[s]!--;
      inLayer[s]!--;
    };
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => perCopy(b) - perCopy(a) || a - b);
    // Keep current holders (up to the copies wanted), hottest experts first.
    for (const e of order) {
      let kept = 0;
      for (let s = 0; s < n && kept < copies[e]!; s++) if (wasHeld(s, e) && !full(s)) (add(s, e), kept++);
    }
    // Missing copies to the least-loaded shard that lacks the expert (room first, then fewest experts).
    for (const e of order) {
      for (let c = [...held].filter((h) => h.has(e)).length; c < copies[e]!; c++) {
        let best = -1;
        for (let s = 0; s < n; s++) {
          if (held[s]!.has(e)) continue;
          const key = (i: number): [number, number, number] => [full(i) ? 1 : 0, tokens[i]!, held[i]!.size];
          if (best < 0 || compareKeys(key(s), key(best)) < 0) best = s;
        }
        add(best, e);
      }
    }
    // Even out: one expert at a time from the busiest shard to the idlest, while it helps.
    const total = tokens.reduce((a, b) => a + b, 0);
    const mean = total / n;
    const reachable = mean > 0 ? Math.max(1, Math.max(...order.map(perCopy)) / mean) : 1;
    for (let step = 0; step < E * n && mean > 0; step++) {
      const busiest = argBest(tokens, (a, b) => a > b);
      if (tokens[busiest]! / mean <= reachable * tolerance) break;
      const move = bestMove(busiest, tokens, held, full, perCopy);
      if (!move) break;
      remove(busiest, move.expert);
      add(move.to, move.expert);
    }
    slots.forEach((slot, s) => {
      const experts = [...held[s]!].sort((a, b) => a - b);
      shards[slot]!.push({ layer, experts });
      moved += experts.filter((e) => !wasHeld(s, e)).length;
    });
  });
  if (req.memoryBudgetBytes !== undefined) {
    const over = slots.map((slot, s) => ({ slot, bytes: count[s]! * req.bytesPerExpert })).filter((x) => x.bytes > req.memoryBudgetBytes!);
    if (over.length) {
      throw new PlacementPlanError(
        `${over.map((o) => `shard ${o.slot} needs ${planSizeText(o.bytes)}`).join(', ')} but the budget is ${planSizeText(req.memoryBudgetBytes)} per shard: add shards, add memory, or lower --redundant-experts`,
      );
    }
  }
  const plan: PlacementPlan = { version: req.version, modelFingerprint: req.modelFingerprint, shards };
  return { plan, movedExperts: moved, movedBytes: moved * req.bytesPerExpert };
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

function argBest(values: readonly number[], better: (a: number, b: number) => boolean): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (better(values[i]!, values[best]!)) best = i;
  return best;
}

/**
 * The expert to move off `from`, and where: to a shard with room that lacks it, such that the
 * busier of the two ends lower than `from` is now; of those, the move that leaves the pair most even.
 */
function bestMove(
  from: number,
  tokens: readonly number[],
  held: readonly Set<number>[],
  full: (shard: number) => boolean,
  perCopy: (e: number) => number,
): { expert: number; to: number } | null {
  let best: { expert: number; to: number; after: number } | null = null;
  for (let to = 0; to < tokens.length; to++) {
    if (to === from || full(to)) continue;
    for (const e of held[from]!) {
      if (held[to]!.has(e)) continue;
      const p = perCopy(e);
      const after = Math.max(tokens[from]! - p, tokens[to]! + p);
      if (after < tokens[from]! - 1e-9 && (!best || after < best.after - 1e-9)) best = { expert: e, to, after };
    }
  }
  return best;
}
