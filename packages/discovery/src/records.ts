import { z } from 'zod';

/** What a shard publishes about itself under its lease. */
export const shardRecordSchema = z.object({
  shardId: z.string().min(1),
  address: z.string().min(1),
  modelFingerprint: z.string(),
  layers: z.array(z.object({ layer: z.number().int().nonnegative(), experts: z.array(z.number().int().nonnegative()) })),
  computeDtype: z.string(),
  weightBytes: z.number().nonnegative(),
  health: z.enum(['SERVING', 'NOT_SERVING']),
  /** Version of the placement plan the shard loaded its experts for (0 = none). */
  planVersion: z.number().int().nonnegative(),
  /** The plan's slot this shard fills ('' when its experts were given by hand). */
  slot: z.string(),
});
export type ShardRecord = z.infer<typeof shardRecordSchema>;

/** Which experts each shard slot holds: stored once per cluster, versioned. */
export const placementPlanSchema = z.object({
  version: z.number().int().positive(),
  modelFingerprint: z.string(),
  /** shard slot name → per MoE layer, the experts it holds. */
  shards: z.record(z.string(), z.array(z.object({ layer: z.number().int().nonnegative(), experts: z.array(z.number().int().nonnegative()) }))),
});
export type PlacementPlan = z.infer<typeof placementPlanSchema>;

/** Key layout under the cluster's prefix. */
export const keys = {
  prefix: (cluster: string): string => `/expertmesh/${cluster}/`,
  shards: (cluster: string): string => `/expertmesh/${cluster}/shards/`,
  shard: (cluster: string, shardId: string): string => `/expertmesh/${cluster}/shards/${shardId}`,
  plan: (cluster: string): string => `/expertmesh/${cluster}/plan`,
};
