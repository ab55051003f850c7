import type { RecordProblem } from './record-checks.js';
import type { PlacementPlan, ShardRecord } from './records.js';
import type { WatchOptions } from './watch-pace.js';

/**
 * Asked when the shard id is held: whether that holder is gone (its process dead, its lease not yet
 * run out). Only then is the record replaced, and only if it is still the one that was judged.
 */
export type StaleHolderCheck = (holder: ShardRecord) => Promise<boolean>;

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
   * TTL when absent, as etcd clients do). The shard id is claimed, not overwritten: while another
   * process holds it this throws RegistryConflictError, unless `isStale` finds that holder gone.
   */
  registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds?: number, isStale?: StaleHolderCheck): Promise<ShardRegistration>;
  listShards(): Promise<ShardRecord[]>;
  /**
   * Calls `listener` with the full set of live shards now and after every change, with the entries
   * that are not valid shard records beside them (ignored, for logs and metrics). With
   * `options.pace`, as watchPlan: changes are parsed and delivered once it resolves, coalesced.
   */
  watchShards(listener: (shards: ShardRecord[], invalid: readonly RecordProblem[]) => void, options?: WatchOptions): Promise<() => Promise<void>>;
  /**
   * Stores a new plan, never silently over another writer's: `replaces` is the version the writer
   * read (null: there must be no plan yet). Without it the new version must be above the stored one.
   * Throws RegistryConflictError when the stored plan is not the one expected.
   */
  putPlan(plan: PlacementPlan, options?: { replaces?: number | null }): Promise<void>;
  getPlan(): Promise<PlacementPlan | null>;
  /**
   * Calls `listener` with the plan now and after every change. With `options.pace`, each change is
   * parsed and delivered only once `pace()` resolves, and changes meanwhile coalesce (WatchOptions).
   */
  watchPlan(listener: (plan: PlacementPlan | null) => void, options?: WatchOptions): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
