import type { ModelConfig } from '@expertmesh/model-config';
import type { PlacementPlan, ShardRecord } from './records.js';

/** A record or plan that parsed but does not fit the model: it is ignored (with a log line and a metric), never used. */
export interface RecordProblem {
  /** The registry key or shard id it came from. */
  readonly source: string;
  readonly reason: string;
}

type Layers = readonly { readonly layer: number; readonly experts: readonly number[] }[];

/** Problems with a per-layer expert list against the model: layers that are not MoE layers, experts beyond the model, repeats. */
function layerProblem(layers: Layers, config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>): string | null {
  const seen = new Set<number>();
  for (const { layer, experts } of layers) {
    if (!config.moeLayers.includes(layer)) return `layer ${layer} is not an MoE layer of this model`;
    if (seen.has(layer)) return `layer ${layer} is listed twice`;
    seen.add(layer);
    if (experts.length > config.nRoutedExperts) return `layer ${layer} lists ${experts.length} experts; the model has ${config.nRoutedExperts}`;
    const ids = new Set<number>();
    for (const e of experts) {
      if (e >= config.nRoutedExperts) return `expert ${e} of layer ${layer} is beyond the model's ${config.nRoutedExperts} experts`;
      if (ids.has(e)) return `expert ${e} of layer ${layer} is listed twice`;
      ids.add(e);
    }
  }
  return null;
}

/** Why a shard record cannot be used by a router of this model, or null when it can. */
export function shardRecordProblem(record: ShardRecord, config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>): string | null {
  return layerProblem(record.layers, config);
}

/**
 * Why a placement plan cannot be followed for this model, or null when it can: every slot's layers
 * and experts exist, and every expert of every MoE layer has at least one holder (a plan with empty
 * slots would leave experts unserved).
 */
export function planProblem(plan: PlacementPlan, config: Pick<ModelConfig, 'moeLayers' | 'nRoutedExperts'>, fingerprint?: string): string | null {
  if (fingerprint !== undefined && plan.modelFingerprint !== fingerprint) return `plan v${plan.version} is for model ${plan.modelFingerprint.slice(0, 64)}, not ${fingerprint}`;
  const slots = Object.entries(plan.shards);
  if (slots.length === 0) return `plan v${plan.version} has no slots`;
  const held = new Map<number, Set<number>>(config.moeLayers.map((l) => [l, new Set<number>()]));
  for (const [slot, layers] of slots) {
    const problem = layerProblem(layers, config);
    if (problem) return `plan v${plan.version}, slot ${slot.slice(0, 64)}: ${problem}`;
    for (const { layer, experts } of layers) for (const e of experts) held.get(layer)!.add(e);
  }
  for (const [layer, experts] of held) {
    if (experts.size < config.nRoutedExperts) return `plan v${plan.version} leaves ${config.nRoutedExperts - experts.size} experts of layer ${layer} without a holder`;
  }
  return null;
}
