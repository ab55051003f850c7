import { z } from 'zod';

const layerExperts = z.array(z.object({ layer: z.number().int().nonnegative().max(4096), experts: z.array(z.number().int().nonnegative()).max(65536) })).max(4096);

/** Bounds on names: ids, slots and addresses are short, printable and never control characters. */
const name = (max: number) => z.string().min(1).max(max).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces');

/** What a shard publishes about itself under its lease. */
export const shardRecordSchema = z.object({
  shardId: name(128),
  address: name(300),
  modelFingerprint: z.string().max(128),
  layers: layerExperts,
  computeDtype: z.string().max(32),
  /** Bytes of expert weights held, in `weightFormat` (absent from older shards: float32). */
  weightBytes: z.number().nonnegative(),
  weightFormat: z.string().max(64).optional(),
  health: z.enum(['SERVING', 'NOT_SERVING']),
  /** Version of the placement plan the shard loaded its experts for (0 = none). */
  planVersion: z.number().int().nonnegative(),
  /** The plan's slot this shard fills ('' when its experts were given by hand). */
  slot: z.string().max(128),
});
export type ShardRecord = z.infer<typeof shardRecordSchema>;

/** Which experts each shard slot holds: stored once per cluster, versioned. */
export const placementPlanSchema = z.object({
  version: z.number().int().positive(),
  modelFingerprint: z.string().max(128),
  /** shard slot name → per MoE layer, the experts it holds. */
  shards: z.record(name(128), layerExperts),
});
export type PlacementPlan = z.infer<typeof placementPlanSchema>;

/** Key layout under the cluster's prefix. */
export const keys = {
  prefix: (cluster: string): string => `/expertmesh/${cluster}/`,
  shards: (cluster: string): string => `/expertmesh/${cluster}/shards/`,
  shard: (cluster: string, shardId: string): string => `/expertmesh/${cluster}/shards/${shardId}`,
  plan: (cluster: string): string => `/expertmesh/${cluster}/plan`,
};
