import type { ClusterRegistry, ShardRegistration, StaleHolderCheck } from './cluster-registry.js';
import type { RecordProblem } from './record-checks.js';
import { RegistryAuthError, RegistryConflictError, SlotTakenError } from './registry-errors.js';
import { pacedListener, type WatchOptions } from './watch-pace.js';
import { placementPlanSchema, shardRecordSchema, type PlacementPlan, type ShardRecord } from './records.js';

/** Valid shard records of a snapshot, each element checked alone: one bad entry never hides the rest. */
function splitRecords(value: unknown): { shards: ShardRecord[]; invalid: RecordProblem[] } {
  const shards: ShardRecord[] = [];
  const invalid: RecordProblem[] = [];
  (Array.isArray(value) ? value : []).forEach((v: unknown, i) => {
    const r = shardRecordSchema.safeParse(v);
    if (r.success) shards.push(r.data);
    else invalid.push({ source: `shards[${i}]`, reason: `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}` });
  });
  return { shards, invalid };
}

/** A client of the embedded registry server (RegistryServer): the ClusterRegistry of `up` without etcd. */
export class HttpRegistry implements ClusterRegistry {
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly watches = new Set<AbortController>();

  /** `token`: the server's bearer token (EXPERTMESH_REGISTRY_TOKEN). */
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  private get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}` };
  }

  private async get(path: string, init: RequestInit = {}): Promise<Response> {
    const r = await fetch(`${this.url}${path}`, { ...init, headers: { ...this.headers, ...(init.headers as Record<string, string> | undefined) } });
    if (r.status === 401) throw new RegistryAuthError(`the registry at ${this.url} refused this process's token: set EXPERTMESH_REGISTRY_TOKEN to the token \`expertmesh up\` printed`);
    return r;
  }

  async registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds = ttlSeconds / 3, isStale?: StaleHolderCheck): Promise<ShardRegistration> {
    let current = record;
    let lease: string;
    try {
      lease = await this.grant(current, ttlSeconds);
    } catch (e) {
      if (!(e instanceof RegistryConflictError) || e instanceof SlotTakenError || !isStale) throw e;
      const holder = shardRecordSchema.nullable().parse(await (await this.get(`/v1/shards/${encodeURIComponent(record.shardId)}`)).json());
      if (holder && !(await isStale(holder))) throw e;
      lease = await this.grant(current, ttlSeconds, holder ?? undefined);
    }
    let closed = false;
    const lost: ((e: Error) => void)[] = [];
    // A lease found expired (registry restarted, process paused) is granted again.
    const timer = setInterval(async () => {
      if (closed || this.closed) return;
      try {
        const r = await this.get(`/v1/leases/${lease}/keepalive`, { method: 'POST' });
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
        await this.get(`/v1/leases/${lease}`, { method: 'DELETE' }).catch(() => undefined);
      },
      onLost: (l) => lost.push(l),
    };
  }

  async listShards(): Promise<ShardRecord[]> {
    return splitRecords(await (await this.get('/v1/shards')).json()).shards;
  }

  watchShards(listener: (shards: ShardRecord[], invalid: readonly RecordProblem[]) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    // Parsed as the pace allows (see WatchOptions): the newest value then, once.
    const paced = pacedListener((v: unknown) => {
      const { shards, invalid } = splitRecords(v);
      listener(shards, invalid);
    }, options.pace);
    return this.watch('/v1/watch/shards', paced);
  }

  async putPlan(plan: PlacementPlan, options: { replaces?: number | null } = {}): Promise<void> {
    await this.send('PUT', '/v1/plan', { plan, ...options });
  }

  async getPlan(): Promise<PlacementPlan | null> {
    return placementPlanSchema.nullable().parse(await (await this.get('/v1/plan')).json());
  }

  watchPlan(listener: (plan: PlacementPlan | null) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    return this.watch('/v1/watch/plan', pacedListener((v: unknown) => listener(placementPlanSchema.nullable().parse(v)), options.pace));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const w of this.watches) w.abort();
  }

  private async grant(record: ShardRecord, ttlSeconds: number, replaces?: ShardRecord): Promise<string> {
    const r = await this.send('POST', '/v1/shards', { record, ttlSeconds, ...(replaces ? { replaces } : {}) });
    return ((await r.json()) as { lease: string }).lease;
  }

  private async send(method: string, path: string, body: unknown): Promise<Response> {
    const r = await this.get(path, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (r.status === 409) {
      const body = (await r.json()) as { error: string; kind?: string };
      throw body.kind === 'slot_taken' ? new SlotTakenError(body.error) : new RegistryConflictError(body.error);
    }
    if (!r.ok && r.status !== 404) throw new Error(`registry ${method} ${path}: ${r.status} ${(await r.text()).slice(0, 500)}`);
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
          const res = await this.get(path, { signal: controller.signal });
          if (!res.ok) throw new Error(`watch ${path}: ${res.status}`);
          let buffer = '';
          const decoder = new TextDecoder();
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            buffer += decoder.decode(chunk, { stream: true });
            let at: number;
            while ((at = buffer.indexOf('\n\n')) >= 0) {
              const event = buffer.slice(0, at);
              buffer = buffer.slice(at + 2);
              if (event.startsWith('data: ')) {
                // A value the listener cannot use is reported and skipped; the watch goes on.
                try {
                  onValue(JSON.parse(event.slice(6)));
                } catch (e) {
                  process.stderr.write(`expertmesh: registry watch ${path}: ${(e as Error).message.slice(0, 300)}\n`);
                }
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
