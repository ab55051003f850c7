import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementPlanError, planSizeText } from './placement-planner.js';
import type { ExpertLoad, Replan } from './rebalance-planner.js';
import type { PlacementPlan } from './records.js';

type PlanConfig = Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>;

export interface MembershipReplanRequest {
  readonly config: PlanConfig;
  readonly version: number;
  /** The plan in force: every slot that stays keeps what it holds, except what it gives a new slot. */
  readonly current: PlacementPlan;
  /** The slots of the new plan: the current ones that stay, plus joiners; the current ones missing are gone. */
  readonly slots: readonly string[];
  /** Uniform when absent. */
  readonly expertLoad?: ExpertLoad;
  /** Bytes one expert takes in a shard, in the format shards hold it. */
  readonly bytesPerExpert: number;
  /** Per-shard memory for experts; no limit when absent. */
  readonly memoryBudgetBytes?: number;
  /** A new slot takes experts until the layer's imbalance (max over mean tokens per shard) is within this factor of the best reachable (default 1.05). */
  readonly tolerance?: number;
}

/**
 * The plan for a change of membership that moves only what the change needs (the closed loop and
 * `expertmesh plan` re-plan the whole placement; a shard joining or leaving does not):
 * - a gone slot's copies, and only those, go to the slots that stay (or join): each expert no one else
 *   holds first, each to the slot with the fewest expected tokens in its layer that does not hold it,
 *   then most room; its redundant copies likewise while they fit the memory budget (the hottest per
 *   copy first), else they are dropped. When an expert's only copy fits nowhere, the coldest replica
 *   on a slot that lacks it makes room, so every expert stays held.
 * - a new slot takes experts, and only it loads any: per layer, from the slot with the most expected
 *   tokens (then the most experts held), the one whose move evens the pair most, while that lowers
 *   the busiest slot and the layer is not yet within `tolerance` of the best it can reach. Serving
 *   slots never trade experts among themselves.
 * Copies per expert stay as they were (a join), or fewer only where a leave's did not fit.
 */
export function replanMembership(req: MembershipReplanRequest): Replan {
  const { config, current, slots } = req;
  const n = slots.length;
  if (n === 0) throw new PlacementPlanError('a plan needs at least one shard');
  if (new Set(slots).size !== n) throw new PlacementPlanError('slot names must be distinct');
  const E = config.nRoutedExperts;
  const tolerance = req.tolerance ?? 1.05;
  const cap = req.memoryBudgetBytes !== undefined && req.bytesPerExpert > 0 ? Math.floor(req.memoryBudgetBytes / req.bytesPerExpert) : Infinity;
  const layerIndex = new Map(config.moeLayers.map((layer, i) => [layer, i]));
  const load = (layer: number, e: number): number => Math.max(0, req.expertLoad?.(layer, e) ?? 1);
  const heldIn = (plan: PlacementPlan, slot: string, layer: number): readonly number[] => plan.shards[slot]?.find((l) => l.layer === layer)?.experts ?? [];
  // held[s][i]: the experts slot s holds in the i-th MoE layer. copies[i][e]: how many copies of e the new plan
  // will have: the current plan's, gone slots' included (each is re-homed), less those dropped. Expected tokens
  // are weighed with these from the start, so a re-homed copy is placed against the load the slots will carry.
  const held = slots.map((slot) => config.moeLayers.map((layer) => new Set(heldIn(current, slot, layer))));
  const copies = config.moeLayers.map((layer) => {
    const c = new Array<number>(E).fill(0);
    for (const slot of Object.keys(current.shards)) for (const e of heldIn(current, slot, layer)) c[e]!++;
    return c;
  });
  const count = held.map((layers) => layers.reduce((a, set) => a + set.size, 0));
  const add = (s: number, i: number, e: number): void => (held[s]![i]!.add(e), void count[s]!++);
  const remove = (s: number, i: number, e: number): void => (held[s]![i]!.delete(e), void count[s]!--);
  const perCopy = (i: number, e: number): number => load(config.moeLayers[i]!, e) / Math.max(1, copies[i]![e]!);
  const tokens = (s: number, i: number): number => [...held[s]![i]!].reduce((a, e) => a + perCopy(i, e), 0);

  // 1. The gone slots' copies, the most tokens per copy first, each to the least busy slot that lacks it and has
  // room. A replica is re-homed only while the room left still holds every expert no one else holds yet.
  const orphans = Object.keys(current.shards)
    .filter((slot) => !slots.includes(slot))
    .flatMap((slot) => current.shards[slot]!.flatMap((l) => (layerIndex.has(l.layer) ? l.experts.map((e) => ({ i: layerIndex.get(l.layer)!, e })) : [])))
    .sort((a, b) => perCopy(b.i, b.e) - perCopy(a.i, a.e) || a.i - b.i || a.e - b.e);
  const heldBy = (i: number, e: number): number => held.reduce((a, layers) => a + (layers[i]!.has(e) ? 1 : 0), 0);
  const soleKey = (i: number, e: number): string => `${i}/${e}`;
  const soleLeft = new Set(orphans.filter(({ i, e }) => heldBy(i, e) === 0).map(({ i, e }) => soleKey(i, e)));
  const roomLeft = (): number => (cap === Infinity ? Infinity : slots.reduce((a, _, s) => a + Math.max(0, cap - count[s]!), 0));
  /** The slot with the fewest expected tokens in layer i that lacks e and has room (then the fewest experts held), or -1. */
  const home = (i: number, e: number): number => {
    let best = -1;
    let bestKey: readonly [number, number] = [0, 0];
    for (let s = 0; s < n; s++) {
      if (held[s]![i]!.has(e) || count[s]! >= cap) continue;
      const key = [tokens(s, i), count[s]!] as const;
      if (best < 0 || key[0] < bestKey[0] - 1e-9 || (Math.abs(key[0] - bestKey[0]) <= 1e-9 && key[1] < bestKey[1])) [best, bestKey] = [s, key];
    }
    return best;
  };
  const drop = (i: number, e: number): void => void copies[i]![e]!--;
  for (const { i, e } of orphans) {
    if (soleLeft.delete(soleKey(i, e))) {
      let to = home(i, e);
      if (to < 0) to = evictReplica(i, e);
      add(to, i, e);
      continue;
    }
    const to = roomLeft() - 1 >= soleLeft.size ? home(i, e) : -1;
    if (to >= 0) add(to, i, e);
    else drop(i, e);
  }

  /** Room for the only copy of e in layer i: the coldest replica (any layer) on a slot that lacks e, dropped; the slot's index. */
  function evictReplica(i: number, e: number): number {
    let pick: { s: number; i: number; e: number; perCopy: number } | null = null;
    for (let s = 0; s < n; s++) {
      if (held[s]![i]!.has(e)) continue;
      for (let j = 0; j < held[s]!.length; j++) {
        for (const x of held[s]![j]!) {
          const p = perCopy(j, x);
          if (heldBy(j, x) > 1 && (!pick || p < pick.perCopy)) pick = { s, i: j, e: x, perCopy: p };
        }
      }
    }
    if (!pick) {
      throw new PlacementPlanError(
        `expert ${e} of layer ${config.moeLayers[i]} fits on none of ${slots.join(', ')} (${planSizeText(req.memoryBudgetBytes ?? 0)} per shard): add shards, add memory, or lower --redundant-experts`,
      );
    }
    remove(pick.s, pick.i, pick.e);
    drop(pick.i, pick.e);
    return pick.s;
  }

  // 2. New slots take experts from the busiest slots, layer by layer (their budget spread over the layers still to plan).
  const joiners = slots.map((slot, s) => (slot in current.shards ? -1 : s)).filter((s) => s >= 0);
  if (joiners.length > 0) {
    config.moeLayers.forEach((_, i) => {
      const remaining = config.moeLayers.length - i;
      const room = new Map(joiners.map((s) => [s, cap === Infinity ? Infinity : count[s]! + Math.ceil((cap - count[s]!) / remaining)]));
      const t = slots.map((_, s) => tokens(s, i));
      const mean = t.reduce((a, b) => a + b, 0) / n;
      if (!(mean > 0)) return;
      const reachable = Math.max(1, Math.max(...Array.from({ length: E }, (_, e) => perCopy(i, e))) / mean);
      for (let step = 0; step < E * n; step++) {
        // The busiest slot, then the one holding the most experts (the most bytes to give).
        let from = 0;
        for (let s = 1; s < n; s++) if (t[s]! > t[from]! + 1e-9 || (Math.abs(t[s]! - t[from]!) <= 1e-9 && count[s]! > count[from]!)) from = s;
        if (joiners.includes(from) || t[from]! / mean <= reachable * tolerance) break;
        let best: { e: number; to: number; after: number } | null = null;
        for (const to of joiners) {
          if (count[to]! >= room.get(to)!) continue;
          for (const e of held[from]![i]!) {
            if (held[to]![i]!.has(e)) continue;
            const after = Math.max(t[from]! - perCopy(i, e), t[to]! + perCopy(i, e));
            if (after < t[from]! - 1e-9 && (!best || after < best.after - 1e-9)) best = { e, to, after };
          }
        }
        if (!best) break;
        const p = perCopy(i, best.e);
        remove(from, i, best.e);
        add(best.to, i, best.e);
        t[from]! -= p;
        t[best.to]! += p;
      }
    });
  }

  const shards: PlacementPlan['shards'] = Object.fromEntries(slots.map((slot, s) => [slot, config.moeLayers.map((layer, i) => ({ layer, experts: [...held[s]![i]!].sort((a, b) => a - b) }))]));
  let moved = 0;
  slots.forEach((slot, s) => config.moeLayers.forEach((layer, i) => (moved += [...held[s]![i]!].filter((e) => !heldIn(current, slot, layer).includes(e)).length)));
  const plan: PlacementPlan = { version: req.version, modelFingerprint: current.modelFingerprint, shards };
  return { plan, movedExperts: moved, movedBytes: moved * req.bytesPerExpert };
}
