import { z } from 'zod';

const layerExperts = z.array(z.object({ layer: z.number().int().nonnegative().max(4096), experts: z.array(z.number().int().nonnegative()).max(65536) })).max(4096);

/** Bounds on names: ids, slots and addresses are short, printable and never control characters. */
const name = (max: number) => z.string().min(1).max(max).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces');

/** What a shard publishes about itself under its lease. */
export const shardRecordSchema = z.object({
  shardId: name(128),
  address: name(300),
  /** The expert-compute hot path without HTTP/2 (HOST:PORT), when the shard serves it (absent from older shards). */
  framesAddress: name(300)
    .regex(/^(?:\[[0-9A-Fa-f:.]+\]|[^:[\]]+):\d{1,5}$/, 'HOST:PORT')
    .optional(),
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
  /** Leaving (SIGTERM): still serving what it holds, but nobody should hand experts over to it. */
  draining: z.boolean().optional(),
});
export type ShardRecord = z.infer<typeof shardRecordSchema>;

/** Which experts each shard slot holds: stored once per cluster, versioned. */
export const placementPlanSchema = z.object({
  version: z.number().int().positive(),
  modelFingerprint: z.string().max(128),
  /** shard slot name → per MoE layer, the experts it holds. */
  shards: z.record(name(128), layerExperts),
  /**
   * What the plan was made from, so that whoever re-plans (a rebalance, a shard joining or leaving)
   * keeps it: the measured tokens per expert of each MoE layer (layer → per expert), the bytes one
   * expert takes in the format shards hold it, and the memory budget per shard.
   */
  basis: z
    .object({
      expertLoad: z.record(z.string().regex(/^\d{1,4}$/), z.array(z.number().nonnegative()).max(65536)).optional(),
      expertBytes: z.number().nonnegative().optional(),
      shardMemoryBytes: z.number().positive().optional(),
    })
    .optional(),
});
export type PlacementPlan = z.infer<typeof placementPlanSchema>;

/** Key layout under the cluster's prefix. */
export const keys = {
  prefix: (cluster: string): string => `/expertmesh/${cluster}/`,
  shards: (cluster: string): string => `/expertmesh/${cluster}/shards/`,
  shard: (cluster: string, shardId: string): string => `/expertmesh/${cluster}/shards/${shardId}`,
  plan: (cluster: string): string => `/expertmesh/${cluster}/plan`,
  /** A plan slot's claim: the shard id holding it, under that shard's lease. */
  slot: (cluster: string, slot: string): string => `/expertmesh/${cluster}/slots/${slot}`,
};
