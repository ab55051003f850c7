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
}
