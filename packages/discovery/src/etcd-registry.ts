import type { z } from 'zod';
import { Etcd3, type IKeyValue, type IOptions, type Lease, type Watcher } from 'etcd3';
import type { ClusterRegistry, ShardRegistration, StaleHolderCheck } from './cluster-registry.js';
import { createIfAbsent, putAllIf, replaceIfOwned, replaceIfUnchanged, type KeyCondition } from './etcd-transactions.js';
import { checkPlanReplacement } from './plan-version-check.js';
import type { RecordProblem } from './record-checks.js';
import { RegistryConflictError, SlotTakenError } from './registry-errors.js';
import { keys, placementPlanSchema, shardRecordSchema, type PlacementPlan, type ShardRecord } from './records.js';
import { withTimeout } from '@expertmesh/process-lifecycle';
import { SharedEtcdChannels } from './shared-etcd-channels.js';
import { timedSync } from './sync-work.js';
import { coalescedDelivery, type WatchOptions } from './watch-pace.js';

/** How long closing waits on etcd (revoking a lease, cancelling a watch) before giving up on it. */
const CLOSE_DEADLINE_MS = 2000;

/** How this process proves itself to etcd: TLS (server CA, optional client certificate) and/or a user and password. */
export interface EtcdSecurity {
  readonly tls?: { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer } | undefined;
  readonly auth?: { readonly username: string; readonly password: string } | undefined;
}

/** A value read from etcd, parsed and validated; the problem instead when it is not valid. */
function parseValue<T>(text: string, schema: z.ZodType<T>): { value: T } | { problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { problem: `not JSON (${text.length} bytes)` };
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return { value: parsed.data };
  const issue = parsed.error.issues[0]!;
  return { problem: `${issue.path.join('.') || 'value'}: ${issue.message}` };
}

function slotTaken(slot: string, holder: string): SlotTakenError {
  return new SlotTakenError(`plan slot ${slot} is held by live shard ${holder.slice(0, 128)}: take another slot (or none, to join as a new one)`);
}

/**
 * The cluster registry over etcd: a shard's record lives under a lease it keeps alive, so a dead
 * shard's key disappears when the TTL runs out; routers watch the prefix. If the lease is lost
 * (etcd unreachable past the TTL, or restarted), the shard registers again as soon as it can.
 * Keys are claimed and plans replaced with transactions, so two writers never overwrite each other.
 */
export class EtcdRegistry implements ClusterRegistry {
  private readonly client: Etcd3;
  private readonly channels = new SharedEtcdChannels();
  private closed = false;

  constructor(
    endpoints: readonly string[],
    readonly cluster: string,
    security: EtcdSecurity = {},
  ) {
    const options: IOptions = { hosts: [...endpoints], dialTimeout: 3000, grpcOptions: this.channels.grpcOptions };
    if (security.tls) options.credentials = { rootCertificate: security.tls.ca, ...(security.tls.key ? { privateKey: security.tls.key } : {}), ...(security.tls.cert ? { certChain: security.tls.cert } : {}) };
    if (security.auth) options.auth = { username: security.auth.username, password: security.auth.password };
    this.client = new Etcd3(options);
  }

  async registerShard(record: ShardRecord, ttlSeconds: number, keepAliveSeconds?: number, isStale?: StaleHolderCheck): Promise<ShardRegistration> {
    const key = keys.shard(this.cluster, record.shardId);
    let current = record;
    let lease: Lease | null = null;
    let leaseId = '';
    let closed = false;
    let keepAlive: NodeJS.Timeout | null = null;
    let regranting: Promise<void> | null = null;
    const lostListeners: ((e: Error) => void)[] = [];
    // Only the lease in use can be lost: a lease whose grant failed also reports 'lost', and must not
    // start another round of re-registration (each would spawn more, without bound).
    const lost = (l: Lease, err: Error): void => {
      if (closed || this.closed || l !== lease) return;
      lease = null;
      if (keepAlive) clearInterval(keepAlive);
      for (const f of lostListeners) f(err);
      regrant();
    };
    const grant = async (): Promise<void> => {
      // The client renews at TTL/3 by itself; a set interval renews by hand instead.
      const l = this.client.lease(ttlSeconds, { autoKeepAlive: keepAliveSeconds === undefined });
      const onLost = (err: Error): void => lost(l, err);
      l.on('lost', onLost);
      let id: string;
      try {
        id = await l.grant();
      } catch (e) {
        l.release();
        throw e;
      }
      let claimed: boolean;
      try {
        claimed = (await this.claim(key, null, current, id)) || (await this.replaceStale(key, current, id, isStale));
      } catch (e) {
        await l.revoke().catch(() => undefined);
        throw e;
      }
      if (!claimed) {
        l.removeListener('lost', onLost);
        await l.revoke().catch(() => undefined);
        throw new RegistryConflictError(`shard id ${record.shardId} is registered by another live process (key ${key}): give this shard another --shard-id, or stop the other`);
      }
      lease = l;
      leaseId = id;
      if (keepAliveSeconds !== undefined) {
        if (keepAlive) clearInterval(keepAlive);
        let renewedAt = Date.now();
        keepAlive = setInterval(() => {
          l.keepaliveOnce().then(
            () => (renewedAt = Date.now()),
            (err: Error) => {
              // Past the TTL the lease is gone: register again.
              if (Date.now() - renewedAt > ttlSeconds * 1000) lost(l, err);
            },
          );
        }, keepAliveSeconds * 1000);
        keepAlive.unref();
      }
    };
    /** One re-registration loop at a time, backing off while etcd is unreachable. */
    const regrant = (): void => {
      regranting ??= (async () => {
        for (let attempt = 0; !closed && !this.closed; attempt++) {
          try {
            await grant();
            return;
          } catch {
            await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
          }
        }
      })().finally(() => (regranting = null));
    };
    await grant();
    return {
      update: async (next) => {
        if (next.slot !== record.slot) throw new RegistryConflictError(`a registration keeps its slot (${record.slot || 'none'}): register again to take ${next.slot || 'none'}`);
        current = next;
        // Only while the key is still this lease's: never over a record another process claimed since.
        if (lease && !(await replaceIfOwned(this.client, key, JSON.stringify(next), leaseId))) {
          throw new RegistryConflictError(`shard id ${record.shardId} is no longer held by this process`);
        }
      },
      close: async () => {
        closed = true;
        if (keepAlive) clearInterval(keepAlive);
        // Revoking the lease deletes only the keys this process created under it. An unreachable
        // etcd must not hold a shutdown: past the deadline the lease expires by itself.
        await lease?.revoke({ deadline: Date.now() + CLOSE_DEADLINE_MS }).catch(() => undefined);
      },
      onLost: (listener) => lostListeners.push(listener),
    };
  }

  /**
   * Claims the shard key (absent, or unchanged since `heldRevision`) and, when the record fills a plan
   * slot, the slot key too, in one transaction under `leaseId`: two shards never fill one slot. The
   * slot may be held already only by this very shard id (a stale holder of it being replaced).
   * Throws SlotTakenError when another shard holds the slot; false when the shard id is held.
   */
  private async claim(key: string, heldRevision: string | null, record: ShardRecord, leaseId: string): Promise<boolean> {
    const conditions: KeyCondition[] = [heldRevision === null ? { key, absent: true } : { key, modRevision: heldRevision }];
    const puts = [{ key, value: JSON.stringify(record) }];
    const slotKey = record.slot ? keys.slot(this.cluster, record.slot) : null;
    if (slotKey) {
      const slotHolder = (await this.client.get(slotKey).exec()).kvs[0];
      if (slotHolder && slotHolder.value.toString() !== record.shardId) throw slotTaken(record.slot, slotHolder.value.toString());
      conditions.push(slotHolder ? { key: slotKey, modRevision: slotHolder.mod_revision } : { key: slotKey, absent: true });
      puts.push({ key: slotKey, value: record.shardId });
    }
    if (await putAllIf(this.client, conditions, puts, leaseId)) return true;
    // Lost a race: say which key another process holds now.
    const slotHolder = slotKey ? await this.client.get(slotKey).string() : null;
    if (slotHolder !== null && slotHolder !== record.shardId) throw slotTaken(record.slot, slotHolder);
    return false;
  }

  /** Replaces the holder of `key` with `record` if `isStale` judges it gone and nobody changed the key since it was read. */
  private async replaceStale(key: string, record: ShardRecord, leaseId: string, isStale: StaleHolderCheck | undefined): Promise<boolean> {
    if (!isStale) return false;
    const held = (await this.client.get(key).exec()).kvs[0];
    if (!held) return this.claim(key, null, record, leaseId);
    const parsed = parseValue(held.value.toString(), shardRecordSchema);
    if ('value' in parsed && !(await isStale(parsed.value))) return false;
    return this.claim(key, held.mod_revision, record, leaseId);
  }

  async listShards(): Promise<ShardRecord[]> {
    return (await this.readShards()).shards;
  }

  /** Every shard key, valid records apart from the rest: one bad record never hides the others. */
  private async readShards(): Promise<{ shards: ShardRecord[]; invalid: RecordProblem[] }> {
    const res = await this.client.getAll().prefix(keys.shards(this.cluster)).exec();
    const records = new ShardRecordSet();
    records.reset(res.kvs, BigInt(res.header.revision));
    return records.current();
  }

  /**
   * The shard records now and after every change. The records are read once when the watch starts
   * (and again whenever it reconnects); each change then applies the event's own key and value, parsing
   * that one record: a burst of record updates (a rebalance publishes a few per shard, every shard and
   * router watches) costs no read of the whole prefix per event per watcher. Changes that arrive together
   * reach the listener once. A record is parsed when a delivery needs it, not when its event arrives:
   * with `options.pace` that is when the pace allows (the end of a serving shard's step), and a record
   * changed twice meanwhile is parsed once.
   */
  async watchShards(listener: (shards: ShardRecord[], invalid: readonly RecordProblem[]) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    const prefix = keys.shards(this.cluster);
    const watcher = await this.client.watch().prefix(prefix).create();
    const records = new ShardRecordSet();
    let stopped = false;
    let synced = false;
    const deliver = (): void => {
      if (stopped || !synced) return;
      const { shards, invalid } = records.current();
      try {
        timedSync('records-listeners', () => listener(shards, invalid));
      } catch (e) {
        process.stderr.write(`expertmesh: registry watch listener failed: ${(e as Error).message}\n`);
      }
    };
    const changed = coalescedDelivery(deliver, options.pace);
    const resync = (): void => {
      this.client
        .getAll()
        .prefix(prefix)
        .exec()
        .then(
          (res) => {
            if (stopped) return;
            records.reset(res.kvs, BigInt(res.header.revision));
            synced = true;
            changed();
          },
          (e: Error) => !stopped && process.stderr.write(`expertmesh: registry read failed: ${e.message}\n`),
        );
    };
    return this.follow(watcher, {
      put: (kv) => records.put(kv.key.toString(), kv.value.toString(), BigInt(kv.mod_revision)) && changed(),
      delete: (kv) => records.delete(kv.key.toString(), BigInt(kv.mod_revision)) && changed(),
      connected: resync,
      stop: () => (stopped = true),
    });
  }

  async putPlan(plan: PlacementPlan, options: { replaces?: number | null } = {}): Promise<void> {
    const key = keys.plan(this.cluster);
    const stored = (await this.client.get(key).exec()).kvs[0];
    const storedPlan = stored ? timedSync('plan-store-parse', () => parseValue(stored.value.toString(), placementPlanSchema)) : null;
    // An unreadable stored plan counts as version 0: it can be replaced, but only by a compare on its revision.
    checkPlanReplacement(storedPlan === null ? null : 'value' in storedPlan ? storedPlan.value.version : 0, plan.version, options.replaces);
    const text = timedSync('plan-stringify', () => JSON.stringify(plan));
    const written = stored ? await replaceIfUnchanged(this.client, key, text, stored.mod_revision) : await createIfAbsent(this.client, key, text);
    if (!written) throw new RegistryConflictError(`another writer stored a plan at ${key} while v${plan.version} was being written: read it again and re-plan`);
  }

  async getPlan(): Promise<PlacementPlan | null> {
    const text = await this.client.get(keys.plan(this.cluster)).string();
    return text === null ? null : timedSync('plan-read-parse', () => this.planFrom(text));
  }

  /** The stored plan's text parsed and validated; an error saying what to do when it is not valid. */
  private planFrom(text: string): PlacementPlan {
    const r = parseValue(text, placementPlanSchema);
    if ('problem' in r) throw new Error(`the stored plan at ${keys.plan(this.cluster)} is not valid (${r.problem}): store a new one with \`expertmesh plan --store\``);
    return r.value;
  }

  /**
   * The plan now (read when the watch starts, and again whenever it reconnects) and after every
   * change, taken from the event's own value: a plan change costs a watcher no read of the key (every
   * shard and router watches it, and all would read at once). Each new value is validated as a read
   * is; the same bytes again reuse the last verdict. A value older than one already delivered (a read
   * and the watch's first events may cross) is skipped. An invalid plan is reported and not delivered,
   * and a listener that throws is reported: the watch goes on either way. With `options.pace` a new
   * value waits, unparsed, until the pace allows; a newer one arriving meanwhile replaces it.
   */
  async watchPlan(listener: (plan: PlacementPlan | null) => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    const key = keys.plan(this.cluster);
    const watcher = await this.client.watch().key(key).create();
    let stopped = false;
    let delivered = -1n;
    let last: { text: string; verdict: { plan: PlacementPlan } | { error: Error } } | null = null;
    const apply = (text: string | null, revision: bigint): void => {
      if (stopped || revision <= delivered) return;
      delivered = revision;
      let plan: PlacementPlan | null = null;
      if (text !== null) {
        if (last?.text !== text) {
          try {
            last = { text, verdict: { plan: timedSync('plan-parse', () => this.planFrom(text)) } };
          } catch (e) {
            last = { text, verdict: { error: e as Error } };
          }
        }
        const verdict = last.verdict;
        if ('error' in verdict) return void process.stderr.write(`expertmesh: registry read failed: ${verdict.error.message}\n`);
        plan = verdict.plan;
      }
      try {
        timedSync('plan-listeners', () => listener(plan));
      } catch (e) {
        process.stderr.write(`expertmesh: registry watch listener failed: ${(e as Error).message}\n`);
      }
    };
    // The newest value not yet applied: a value waiting for the pace is replaced by a newer one.
    let waiting: { text: string | null; revision: bigint } | null = null;
    const applyWaiting = coalescedDelivery(() => {
      const next = waiting;
      waiting = null;
      if (next) apply(next.text, next.revision);
    }, options.pace);
    const offer = (text: string | null, revision: bigint): void => {
      if (waiting && revision <= waiting.revision) return;
      waiting = { text, revision };
      applyWaiting();
    };
    const read = (): void => {
      this.client
        .get(key)
        .exec()
        .then(
          (res) => offer(res.kvs[0]?.value.toString() ?? null, BigInt(res.header.revision)),
          (e: Error) => !stopped && process.stderr.write(`expertmesh: registry read failed: ${e.message}\n`),
        );
    };
    return this.follow(watcher, {
      put: (kv) => offer(kv.value.toString(), BigInt(kv.mod_revision)),
      delete: (kv) => offer(null, BigInt(kv.mod_revision)),
      connected: read,
      stop: () => (stopped = true),
    });
  }

  /** Wires a watcher's events, runs `connected` once now, and returns what cancels it. */
  private follow(watcher: Watcher, on: { put: (kv: IKeyValue) => void; delete: (kv: IKeyValue) => void; connected: () => void; stop: () => void }): () => Promise<void> {
    watcher.on('put', on.put);
    watcher.on('delete', on.delete);
    watcher.on('connected', on.connected);
    watcher.on('error', () => undefined);
    on.connected();
    return async () => {
      on.stop();
      await withTimeout(watcher.cancel(), CLOSE_DEADLINE_MS, 'cancelling an etcd watch').catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.client.close();
    this.channels.close();
  }
}

/**
 * The shard records a watch has seen, by key, each parsed once when it changes. Every entry keeps the
 * revision it is from (deleted keys too, until the next full read), so an event older than what a full
 * read already returned (the read and the watch's first events may cross) never brings a stale value back.
 */
class ShardRecordSet {
  /** Per key: its newest value (null: deleted) and, once a delivery needed it, that value parsed. */
  private readonly entries = new Map<string, { revision: bigint; text: string | null; parsed?: { value: ShardRecord } | { problem: string } }>();

  /** Replaces everything with a full read made at `revision`, keeping entries the watch brought that are newer. */
  reset(kvs: readonly { key: Buffer; value: Buffer; mod_revision: string }[], revision: bigint): void {
    const read = new Map(kvs.map((kv) => [kv.key.toString(), kv]));
    for (const [key, entry] of this.entries) if (entry.revision <= revision && !read.has(key)) this.entries.delete(key);
    for (const [key, kv] of read) this.put(key, kv.value.toString(), BigInt(kv.mod_revision));
  }

  /** Whether the value changed what the set holds. */
  put(key: string, text: string, revision: bigint): boolean {
    const held = this.entries.get(key);
    if (held && held.revision >= revision) return false;
    this.entries.set(key, { revision, text });
    return true;
  }

  delete(key: string, revision: bigint): boolean {
    const held = this.entries.get(key);
    if (held && held.revision >= revision) return false;
    this.entries.set(key, { revision, text: null });
    return true;
  }

  /** Valid records apart from the rest, as a full read gives them: one bad record never hides the others. */
  current(): { shards: ShardRecord[]; invalid: RecordProblem[] } {
    const shards: ShardRecord[] = [];
    const invalid: RecordProblem[] = [];
    for (const [key, entry] of [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (entry.text === null) continue;
      const parsed = (entry.parsed ??= timedSync('record-parse', () => parseValue(entry.text!, shardRecordSchema)));
      if ('value' in parsed) shards.push(parsed.value);
      else invalid.push({ source: key.slice(0, 300), reason: parsed.problem });
    }
    return { shards, invalid };
  }
}
