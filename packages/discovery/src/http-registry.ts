import type { ClusterRegistry, ShardRegistration } from './cluster-registry.js';
import { placementPlanSchema, shardRecordSchema, type PlacementPlan, type ShardRecord } from './records.js';

/** A client of the embedded registry server (RegistryServer): the ClusterRegistry of `up` without etcd. */
export class HttpRegistry implements ClusterRegistry {
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly watches = new Set<AbortController>();

  constructor(readonly url: string) {}

  async registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds = ttlSeconds / 3): Promise<ShardRegistration> {
    let current = record;
    let lease = await this.grant(current, ttlSeconds);
    let closed = false;
    const lost: ((e: Error) => void)[] = [];
    // A lease found expired (registry restarted, process paused) is granted again.
    const timer = setInterval(async () => {
      if (closed || this.closed) return;
      try {
        const r = await fetch(`${this.url}/v1/leases/${lease}/keepalive`, { method: 'POST' });
        if (r.status === 404) {
          for (const f of lost) f(new Error('lease expired'));
          lease = await this.grant(current, ttlSeconds);
        }
      } catch {
        // Registry unreachable: try again at the next tick.
      }
    }, keepAliveSeconds * 1000);
    timer.unref();
    this.timers.add(timer);
    return {
      update: async (next) => {
        current = next;
        await this.send('PUT', `/v1/leases/${lease}`, next);
      },
      close: async () => {
        closed = true;
        clearInterval(timer);
        this.timers.delete(timer);
        await fetch(`${this.url}/v1/leases/${lease}`, { method: 'DELETE' }).catch(() => undefined);
      },
      onLost: (l) => lost.push(l),
    };
  }

  async listShards(): Promise<ShardRecord[]> {
    return shardRecordSchema.array().parse(await (await fetch(`${this.url}/v1/shards`)).json());
  }

  watchShards(listener: (shards: ShardRecord[]) => void): Promise<() => Promise<void>> {
    return this.watch('/v1/watch/shards', (v) => listener(shardRecordSchema.array().parse(v)));
  }

  async putPlan(plan: PlacementPlan): Promise<void> {
    await this.send('PUT', '/v1/plan', plan);
  }

  async getPlan(): Promise<PlacementPlan | null> {
    return placementPlanSchema.nullable().parse(await (await fetch(`${this.url}/v1/plan`)).json());
  }

  watchPlan(listener: (plan: PlacementPlan | null) => void): Promise<() => Promise<void>> {
    return this.watch('/v1/watch/plan', (v) => listener(placementPlanSchema.nullable().parse(v)));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const w of this.watches) w.abort();
  }

  private async grant(record: ShardRecord, ttlSeconds: number): Promise<string> {
    const r = await this.send('POST', '/v1/shards', { record, ttlSeconds });
    return ((await r.json()) as { lease: string }).lease;
  }

  private async send(method: string, path: string, body: unknown): Promise<Response> {
    const r = await fetch(`${this.url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!r.ok && r.status !== 404) throw new Error(`registry ${method} ${path}: ${r.status} ${await r.text()}`);
    return r;
  }

  /** Follows a server-sent-event stream of snapshots, reconnecting until stopped. */
  private async watch(path: string, onValue: (v: unknown) => void): Promise<() => Promise<void>> {
    const controller = new AbortController();
    this.watches.add(controller);
    let first: () => void = () => undefined;
    const started = new Promise<void>((r) => (first = r));
    void (async () => {
      for (let attempt = 0; !controller.signal.aborted; attempt++) {
        try {
          const res = await fetch(`${this.url}${path}`, { signal: controller.signal });
          let buffer = '';
          const decoder = new TextDecoder();
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            buffer += decoder.decode(chunk, { stream: true });
            let at: number;
            while ((at = buffer.indexOf('\n\n')) >= 0) {
              const event = buffer.slice(0, at);
              buffer = buffer.slice(at + 2);
              if (event.startsWith('data: ')) {
                onValue(JSON.parse(event.slice(6)));
                first();
                attempt = 0;
              }
            }
          }
        } catch {
          // Reconnect below.
        }
        if (!controller.signal.aborted) await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
      }
    })();
    await Promise.race([started, new Promise((r) => setTimeout(r, 5000))]);
    return async () => {
      controller.abort();
      this.watches.delete(controller);
    };
  }
}
