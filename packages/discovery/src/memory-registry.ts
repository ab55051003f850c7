import type { ClusterRegistry, ShardRegistration, StaleHolderCheck } from './cluster-registry.js';
import { checkPlanReplacement } from './plan-version-check.js';
import type { RecordProblem } from './record-checks.js';
import { RegistryConflictError, SlotTakenError } from './registry-errors.js';
import { pacedListener, type WatchOptions } from './watch-pace.js';
import type { PlacementPlan, ShardRecord } from './records.js';

interface Entry {
  record: ShardRecord;
  expiresAt: number;
}

/**
 * The same registry in one process's memory, with leases that expire when not kept alive: for
 * tests and for a cluster whose router and shards share a process.
 */
export class MemoryRegistry implements ClusterRegistry {
  private readonly shards = new Map<string, Entry>();
  private plan: PlacementPlan | null = null;
  private readonly shardListeners = new Set<(s: ShardRecord[], invalid: readonly RecordProblem[]) => void>();
  private readonly planListeners = new Set<(p: PlacementPlan | null) => void>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    this.sweeper = setInterval(() => this.expire(), 100);
    this.sweeper.unref();
  }

  async registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds = ttlSeconds / 3, isStale?: StaleHolderCheck): Promise<ShardRegistration> {
    const holder = this.liveHolder(record.shardId);
    const registration = this.registerLeased(record, ttlSeconds, holder && isStale && (await isStale(holder)) ? holder : undefined);
    const keepAlive = setInterval(() => registration.keepAlive(), keepAliveSeconds * 1000);
    keepAlive.unref();
    return {
      ...registration,
      close: async () => {
        clearInterval(keepAlive);
        await registration.close();
      },
      // Test hook: what a kill -9 does to the keep-alive.
      ...({ abandon: () => clearInterval(keepAlive) } as object),
    };
  }

  /**
   * A registration whose lease the caller keeps alive (the registry server does this for shards in
   * other processes): keepAlive() returns false once the lease has expired.
   */
  /** The record holding `shardId` under a live lease, if any. */
  liveHolder(shardId: string): ShardRecord | undefined {
    const held = this.shards.get(shardId);
    return held && held.expiresAt >= Date.now() ? held.record : undefined;
  }

  /** `replaces`: the holder's record, judged gone by the caller; it is replaced only if it is still that one. */
  registerLeased(record: ShardRecord, ttlSeconds: number, replaces?: ShardRecord): ShardRegistration & { keepAlive(): boolean } {
    const held = this.shards.get(record.shardId);
    if (held && held.expiresAt >= Date.now() && !(replaces && JSON.stringify(held.record) === JSON.stringify(replaces))) throw new RegistryConflictError(`shard id ${record.shardId} is registered by another live process: give this shard another --shard-id, or stop the other`);
    // The slot is claimed with the id, atomically (one thread): held only by this id or by nobody live.
    const slotHolder = record.slot ? [...this.shards.values()].find((e) => e.expiresAt >= Date.now() && e.record.slot === record.slot && e.record.shardId !== record.shardId) : undefined;
    if (slotHolder) throw new SlotTakenError(`plan slot ${record.slot} is held by live shard ${slotHolder.record.shardId}: take another slot (or none, to join as a new one)`);
    const entry: Entry = { record, expiresAt: Date.now() + ttlSeconds * 1000 };
    this.shards.set(record.shardId, entry);
    this.notifyShards();
    const alive = (): boolean => this.shards.get(record.shardId) === entry;
    return {
      keepAlive: () => {
        if (!alive()) return false;
        entry.expiresAt = Date.now() + ttlSeconds * 1000;
        return true;
      },
      update: async (next) => {
        if (next.slot !== record.slot) throw new RegistryConflictError(`a registration keeps its slot (${record.slot || 'none'}): register again to take ${next.slot || 'none'}`);
        entry.record = next;
        if (alive()) this.notifyShards();
      },
      close: async () => {
        if (alive()) {
          this.shards.delete(record.shardId);
          this.notifyShards();
        }
      },
      onLost: () => undefined,
    };
  }

  async listShards(): Promise<ShardRecord[]> {
    return [...this.shards.values()].map((e) => e.record);
  }

  async watchShards(listener: (shards: ShardRecord[], invalid: readonly RecordProblem[]) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    const paced = pacedListener(listener, options.pace);
    this.shardListeners.add(paced);
    paced(await this.listShards(), []);
    return async () => void this.shardListeners.delete(paced);
  }

  async putPlan(plan: PlacementPlan, options: { replaces?: number | null } = {}): Promise<void> {
    checkPlanReplacement(this.plan?.version ?? null, plan.version, options.replaces);
    this.plan = plan;
    for (const l of this.planListeners) l(plan);
  }

  async getPlan(): Promise<PlacementPlan | null> {
    return this.plan;
  }

  async watchPlan(listener: (plan: PlacementPlan | null) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    const paced = pacedListener(listener, options.pace);
    this.planListeners.add(paced);
    paced(this.plan);
    return async () => void this.planListeners.delete(paced);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  private expire(): void {
    const now = Date.now();
    let changed = false;
    for (const [id, e] of this.shards) {
      if (e.expiresAt < now) {
        this.shards.delete(id);
        changed = true;
      }
    }
    if (changed) this.notifyShards();
  }

  private notifyShards(): void {
    const list = [...this.shards.values()].map((e) => e.record);
    for (const l of this.shardListeners) l(list, []);
  }
}
