import type { PlacementPlan, ShardRecord } from './records.js';

/** A shard's live entry: it stays while the process keeps its lease alive. */
export interface ShardRegistration {
  update(record: ShardRecord): Promise<void>;
  /** Removes the entry now (graceful shutdown). */
  close(): Promise<void>;
  /** Called if the lease is lost (the registry was unreachable for longer than the TTL). */
  onLost(listener: (error: Error) => void): void;
}

/**
 * Where shards announce themselves and routers find them, and where the placement plan lives.
 * Implemented over etcd (leases and watches) and in memory (one process, for tests and a
 * single-machine cluster without etcd); both pass the same tests.
 */
export interface ClusterRegistry {
  /**
   * Publishes `record` under a lease of `ttlSeconds`, renewed every `keepAliveSeconds` (a third of the
   * TTL when absent, as etcd clients do).
   */
  registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds?: number): Promise<ShardRegistration>;
  listShards(): Promise<ShardRecord[]>;
  /** Calls `listener` with the full set of live shards now and after every change. */
  watchShards(listener: (shards: ShardRecord[]) => void): Promise<() => Promise<void>>;
  putPlan(plan: PlacementPlan): Promise<void>;
  getPlan(): Promise<PlacementPlan | null>;
  watchPlan(listener: (plan: PlacementPlan | null) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
