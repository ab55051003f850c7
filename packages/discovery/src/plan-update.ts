import type { ClusterRegistry } from './cluster-registry.js';
import type { PlacementPlan } from './records.js';
import { RegistryConflictError } from './registry-errors.js';

/**
 * Reads the stored plan, derives the next one from it with `next` (null: nothing to change), and
 * stores it only over the version read (compare-and-swap). When another writer got there first it
 * reads again and derives again, up to `attempts` times: a rebalance, a shard joining and a shard
 * leaving may all re-plan at once, and each change is made on top of the others, never over them.
 * `next` may be async (the router's re-plan runs in a worker thread).
 */
export async function updatePlan<T extends { readonly plan: PlacementPlan }>(
  registry: ClusterRegistry,
  next: (current: PlacementPlan | null) => T | null | Promise<T | null>,
  attempts = 8,
): Promise<T | null> {
  for (let attempt = 1; ; attempt++) {
    const current = await registry.getPlan();
    const change = await next(current);
    if (!change) return null;
    try {
      await registry.putPlan(change.plan, { replaces: current?.version ?? null });
      return change;
    } catch (e) {
      if (!(e instanceof RegistryConflictError) || attempt >= attempts) throw e;
      await new Promise((r) => setTimeout(r, 20 * attempt + Math.random() * 50));
    }
  }
}
