import type { ModelConfig } from '@expertmesh/model-config';
import type { PlacementPlan } from './records.js';

export class PlacementPlanError extends Error {
  override readonly name = 'PlacementPlanError';
}

export interface PlanRequest {
  readonly config: ModelConfig;
  readonly modelFingerprint: string;
  readonly version: number;
  /** Shard slot names (their number is the number of shards). */
  readonly slots: readonly string[];
  /** Extra expert copies per MoE layer, given to the experts with the most load. */
  readonly redundantExperts?: number;
  /** Observed tokens per (layer, expert); uniform when absent. */
  readonly expertLoad?: (layer: number, expert: number) => number;
  /** Bytes one expert of one layer takes in a shard's memory. */
  readonly bytesPerExpert: number;
  /** Per-shard memory budget for experts; no limit when absent. */
  readonly memoryBudgetBytes?: number;
}

/**
 * Which shard holds which experts. Per MoE layer: experts in decreasing load go to the shard with
 * the least load so far (fewest experts on ties), so every expert is held at least once and load
 * evens out; then each redundant slot copies the expert with the most load per copy onto the
 * least-loaded shard that lacks it (a replica halves that expert's load per holder).
 */
export function planPlacement(req: PlanRequest): PlacementPlan {
  const n = req.slots.length;
  if (n === 0) throw new PlacementPlanError('a plan needs at least one shard');
  const E = req.config.nRoutedExperts;
  const redundant = req.redundantExperts ?? 0;
  if (redundant > E * (n - 1)) throw new PlacementPlanError(`${redundant} redundant experts per layer exceed what ${n} shards can hold (${E * (n - 1)})`);
  const shards: PlacementPlan['shards'] = Object.fromEntries(req.slots.map((s) => [s, []]));
  const counts = new Array<number>(n).fill(0);
  for (const layer of req.config.moeLayers) {
    const load = Array.from({ length: E }, (_, e) => req.expertLoad?.(layer, e) ?? 1);
    const holders: number[][] = Array.from({ length: E }, () => []);
    const shardLoad = new Array<number>(n).fill(0);
    const held: number[][] = Array.from({ length: n }, () => []);
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => load[b]! - load[a]! || a - b);
    const place = (e: number, perCopy: number): void => {
      let best = -1;
      for (let s = 0; s < n; s++) {
        if (holders[e]!.includes(s)) continue;
        if (best < 0 || shardLoad[s]! < shardLoad[best]! || (shardLoad[s] === shardLoad[best] && held[s]!.length < held[best]!.length)) best = s;
      }
      holders[e]!.push(best);
      held[best]!.push(e);
      shardLoad[best]! += perCopy;
    };
    for (const e of order) place(e, load[e]!);
    for (let r = 0; r < redundant; r++) {
      let pick = -1;
      for (let e = 0; e < E; e++) {
        if (holders[e]!.length >= n) continue;
        if (pick < 0 || load[e]! / holders[e]!.length > load[pick]! / holders[pick]!.length) pick = e;
      }
      place(pick, load[pick]! / (holders[pick]!.length + 1));
    }
    req.slots.forEach((slot, s) => {
      shards[slot]!.push({ layer, experts: held[s]!.sort((a, b) => a - b) });
      counts[s]! += held[s]!.length;
    });
  }
  if (req.memoryBudgetBytes !== undefined) {
    const over = req.slots.map((slot, s) => ({ slot, bytes: counts[s]! * req.bytesPerExpert })).filter((x) => x.bytes > req.memoryBudgetBytes!);
    if (over.length) {
      const gb = (b: number): string => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);
      throw new PlacementPlanError(
        `${over.map((o) => `shard ${o.slot} needs ${gb(o.bytes)}`).join(', ')} but the budget is ${gb(req.memoryBudgetBytes)} per shard: add shards, add memory, or lower --redundant-experts`,
      );
    }
  }
  return { version: req.version, modelFingerprint: req.modelFingerprint, shards };
}

/** Bytes per shard the plan implies. */
export function planShardBytes(plan: PlacementPlan, bytesPerExpert: number): Record<string, number> {
  return Object.fromEntries(Object.entries(plan.shards).map(([slot, layers]) => [slot, layers.reduce((a, l) => a + l.experts.length, 0) * bytesPerExpert]));
}
