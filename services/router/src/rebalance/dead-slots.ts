import { replanWithout, updatePlan, type ClusterRegistry, type PlacementPlan, type Replan, type ShardRecord } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';

/** What dropping dead slots did: for logs, metrics and tests. */
export interface DeadSlotsDropped {
  readonly version: number;
  readonly slots: readonly string[];
  readonly movedExperts: number;
  readonly movedBytes: number;
  /** Redundant copies per layer of the new plan (fewer than before when the shards left cannot hold them all). */
  readonly redundantExperts: number;
}

/**
 * Plan slots that no live shard claims. A shard killed with kill -9 loses its lease after its TTL, and
 * with it its record and its slot claim; if nothing claims the slot again within `graceMs` (a restart
 * would), the slot is dead for good: a plan without it is stored, whose experts are re-homed on the
 * live shards within their memory budgets, so every expert regains its holders and its replicas.
 * A slot is judged only from when this watcher first saw it unclaimed (a restarted router waits a
 * whole grace again), and a slot claimed even once in between starts over.
 */
export class DeadSlots {
  private readonly unclaimedSince = new Map<string, number>();

  constructor(
    private readonly registry: ClusterRegistry,
    private readonly config: ModelConfig,
    private readonly graceMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Looks at the plan and the live shards; stores a plan without the slots dead for longer than the grace. */
  async check(): Promise<DeadSlotsDropped | null> {
    const [plan, records] = await Promise.all([this.registry.getPlan(), this.registry.listShards()]);
    if (!plan) return null;
    const dead = this.track(plan, records);
    if (dead.length === 0) return null;
    const change = await updatePlan(this.registry, (current): (Replan & { redundantExperts: number; slots: string[] }) | null => {
      if (!current) return null;
      // Judged again on the plan being replaced: a slot another writer dropped, or a shard claimed meanwhile, is left alone.
      const gone = dead.filter((s) => s in current.shards);
      if (gone.length === 0 || gone.length === Object.keys(current.shards).length) return null;
      return { ...replanWithout(this.config, current, gone, records), slots: gone };
    });
    if (!change) return null;
    for (const s of change.slots) this.unclaimedSince.delete(s);
    return { version: change.plan.version, slots: change.slots, movedExperts: change.movedExperts, movedBytes: change.movedBytes, redundantExperts: change.redundantExperts };
  }

  /** Updates when each slot of `plan` was first seen unclaimed; returns those unclaimed for longer than the grace. */
  private track(plan: PlacementPlan, records: readonly ShardRecord[]): string[] {
    const claimed = new Set(records.map((r) => r.slot));
    const t = this.now();
    for (const slot of this.unclaimedSince.keys()) if (!(slot in plan.shards) || claimed.has(slot)) this.unclaimedSince.delete(slot);
    for (const slot of Object.keys(plan.shards)) if (!claimed.has(slot) && !this.unclaimedSince.has(slot)) this.unclaimedSince.set(slot, t);
    return [...this.unclaimedSince].filter(([, since]) => t - since >= this.graceMs).map(([slot]) => slot);
  }
}
