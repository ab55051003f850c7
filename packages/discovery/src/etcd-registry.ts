import { Etcd3, type Lease, type WatchBuilder } from 'etcd3';
import type { ClusterRegistry, ShardRegistration } from './cluster-registry.js';
import { keys, placementPlanSchema, shardRecordSchema, type PlacementPlan, type ShardRecord } from './records.js';

/**
 * The cluster registry over etcd: a shard's record lives under a lease it keeps alive, so a dead
 * shard's key disappears when the TTL runs out; routers watch the prefix. If the lease is lost
 * (etcd unreachable past the TTL, or restarted), the shard registers again as soon as it can.
 */
export class EtcdRegistry implements ClusterRegistry {
  private readonly client: Etcd3;
  private closed = false;

  constructor(
    endpoints: readonly string[],
    readonly cluster: string,
  ) {
    this.client = new Etcd3({ hosts: [...endpoints], dialTimeout: 3000 });
  }

  async registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds?: number): Promise<ShardRegistration> {
    const key = keys.shard(this.cluster, record.shardId);
    let current = record;
    let lease: Lease | null = null;
    let closed = false;
    let keepAlive: NodeJS.Timeout | null = null;
    const lostListeners: ((e: Error) => void)[] = [];
    const lost = (err: Error): void => {
      if (closed || this.closed) return;
      for (const f of lostListeners) f(err);
      void regrant();
    };
    const grant = async (): Promise<void> => {
      // The client renews at TTL/3 by itself; a set interval renews by hand instead.
      const l = this.client.lease(ttlSeconds, { autoKeepAlive: keepAliveSeconds === undefined });
      l.on('lost', lost);
      await l.put(key).value(JSON.stringify(current));
      lease = l;
      if (keepAliveSeconds !== undefined) {
        if (keepAlive) clearInterval(keepAlive);
        let renewedAt = Date.now();
        keepAlive = setInterval(() => {
          l.keepaliveOnce().then(
            () => (renewedAt = Date.now()),
            (err: Error) => {
              // Past the TTL the lease is gone: register again.
              if (Date.now() - renewedAt > ttlSeconds * 1000 && lease === l) {
                lease = null;
                lost(err);
              }
            },
          );
        }, keepAliveSeconds * 1000);
        keepAlive.unref();
      }
    };
    const regrant = async (): Promise<void> => {
      for (let attempt = 0; !closed && !this.closed; attempt++) {
        try {
          await grant();
          return;
        } catch {
          await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
        }
      }
    };
    await grant();
    return {
      update: async (next) => {
        current = next;
        if (lease) await lease.put(key).value(JSON.stringify(next));
      },
      close: async () => {
        closed = true;
        if (keepAlive) clearInterval(keepAlive);
        await lease?.revoke().catch(() => undefined);
      },
      onLost: (listener) => lostListeners.push(listener),
    };
  }

  async listShards(): Promise<ShardRecord[]> {
    const all = await this.client.getAll().prefix(keys.shards(this.cluster)).strings();
    return Object.values(all).flatMap((v) => {
      const parsed = shardRecordSchema.safeParse(JSON.parse(v));
      return parsed.success ? [parsed.data] : [];
    });
  }

  watchShards(listener: (shards: ShardRecord[]) => void): Promise<() => Promise<void>> {
    return this.watchAndRead(this.client.watch().prefix(keys.shards(this.cluster)), () => this.listShards(), listener);
  }

  async putPlan(plan: PlacementPlan): Promise<void> {
    await this.client.put(keys.plan(this.cluster)).value(JSON.stringify(plan));
  }

  async getPlan(): Promise<PlacementPlan | null> {
    const text = await this.client.get(keys.plan(this.cluster)).string();
    return text === null ? null : placementPlanSchema.parse(JSON.parse(text));
  }

  watchPlan(listener: (plan: PlacementPlan | null) => void): Promise<() => Promise<void>> {
    return this.watchAndRead(this.client.watch().key(keys.plan(this.cluster)), () => this.getPlan(), listener);
  }

  /**
   * Calls `listener` with a fresh read now and after every change the watch reports. Re-reading the
   * whole value on each event is simple, and stays correct after the watch reconnects.
   */
  private async watchAndRead<T>(builder: WatchBuilder, read: () => Promise<T>, listener: (value: T) => void): Promise<() => Promise<void>> {
    const watcher = await builder.create();
    let stopped = false;
    const refresh = (): void => {
      read().then(
        (v) => !stopped && listener(v),
        () => undefined,
      );
    };
    watcher.on('put', refresh);
    watcher.on('delete', refresh);
    watcher.on('connected', refresh);
    watcher.on('error', () => undefined);
    refresh();
    return async () => {
      stopped = true;
      await watcher.cancel();
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.client.close();
  }
}
