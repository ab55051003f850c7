import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementError } from './dispatch-errors.js';

/** Which shards hold which experts: per MoE layer and expert, the indices of its holders. */
export class ExpertPlacement {
  private constructor(private readonly holders: ReadonlyMap<number, readonly (readonly number[])[]>) {}

  /**
   * Builds the table from each shard's held experts. Every expert of every MoE layer needs a holder,
   * unless `allowMissing` (a live cluster between changes): then dispatching to an orphan fails.
   */
  static fromShards(
    config: ModelConfig,
    shards: readonly { readonly address: string; readonly layers: readonly { layer: number; experts: readonly number[] }[] }[],
    options: { allowMissing?: boolean } = {},
  ): ExpertPlacement {
    const holders = new Map<number, number[][]>();
    for (const layer of config.moeLayers) holders.set(layer, Array.from({ length: config.nRoutedExperts }, () => []));
    shards.forEach((shard, s) => {
      for (const { layer, experts } of shard.layers) {
        const table = holders.get(layer);
        if (!table) throw new PlacementError(`shard ${shard.address} holds experts of layer ${layer}, which is not an MoE layer of this model`);
        for (const e of experts) {
          if (e >= config.nRoutedExperts) throw new PlacementError(`shard ${shard.address} holds expert ${e}, beyond the model's ${config.nRoutedExperts}`);
          table[e]!.push(s);
        }
      }
    });
    const missing: string[] = [];
    for (const [layer, table] of holders) {
      const orphans = table.flatMap((h, e) => (h.length ? [] : [e]));
      if (orphans.length) missing.push(`layer ${layer}: experts ${orphans.length > 6 ? `${orphans.slice(0, 6).join(', ')}… (${orphans.length})` : orphans.join(', ')}`);
    }
    if (missing.length && !options.allowMissing) throw new PlacementError(`no shard holds ${missing.slice(0, 4).join('; ')}${missing.length > 4 ? ` and ${missing.length - 4} more layers` : ''}: start shards for them`);
    return new ExpertPlacement(holders);
  }

  holdersOf(layer: number, expert: number): readonly number[] {
    return this.holders.get(layer)?.[expert] ?? [];
  }

  /**
   * Splits a token's experts (ascending ids) into groups, each wholly held by one shard of this
   * placement: greedily the shard holding the most of the experts left (the lowest index on ties).
   * Returns, per group, a bit mask over the positions in `experts`. The split depends only on the
   * experts and this placement, never on load or on which shards are up, so a group's weighted sum
   * comes out the same whichever holder computes it (a shard adds its experts in ascending order).
   */
  groupsOf(layer: number, experts: ArrayLike<number>): number[] {
    const n = experts.length;
    if (n > 30) throw new RangeError(`${n} experts per token: grouping supports at most 30`);
    const table = this.holders.get(layer);
    const groups: number[] = [];
    let left = 2 ** n - 1;
    const masks = new Map<number, number>();
    while (left) {
      masks.clear();
      for (let p = 0; p < n; p++) {
        if (!(left & (1 << p))) continue;
        for (const h of table?.[experts[p]!] ?? []) masks.set(h, (masks.get(h) ?? 0) | (1 << p));
      }
      let best = -1;
      let bestMask = 0;
      let bestCount = 0;
      for (const [h, mask] of masks) {
        const count = popcount(mask);
        if (count > bestCount || (count === bestCount && h < best)) [best, bestMask, bestCount] = [h, mask, count];
      }
      if (best < 0) {
        // Experts this placement does not hold: each alone.
        for (let p = 0; p < n; p++) if (left & (1 << p)) groups.push(1 << p);
        break;
      }
      groups.push(bestMask);
      left &= ~bestMask;
    }
    return groups;
  }
}

function popcount(mask: number): number {
  let c = 0;
  for (let m = mask; m; m &= m - 1) c++;
  return c;
}
