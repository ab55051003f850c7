import type { ModelConfig } from '@expertmesh/model-config';
import type { PlacementPlan } from './records.js';
import { replan } from './rebalance-planner.js';

export class PlacementPlanError extends Error {
  override readonly name = 'PlacementPlanError';
}

/** A memory size as a plan error states it (MiB, or GiB from 1 GiB). */
export function planSizeText(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
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
 * Which shard holds which experts, planned from scratch: per MoE layer every expert is held at least
 * once, the redundant copies go to the experts with the most load per copy, and expected tokens per
 * shard even out (see `replan`, which also keeps a current plan's holders).
 */
export function planPlacement(req: PlanRequest): PlacementPlan {
  return replan({ ...req, current: null, ...(req.expertLoad ? { expertLoad: req.expertLoad } : {}), redundantExperts: req.redundantExperts ?? 0 }).plan;
}

/** Bytes per shard the plan implies. */
export function planShardBytes(plan: PlacementPlan, bytesPerExpert: number): Record<string, number> {
  return Object.fromEntries(Object.entries(plan.shards).map(([slot, layers]) => [slot, layers.reduce((a, l) => a + l.experts.length, 0) * bytesPerExpert]));
}
