import { loadingNow, planProblem, shardRecordProblem, type ClusterRegistry, type PlacementPlan, type RecordProblem, type ShardRecord } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { hostOf, isLoopbackHost } from '@expertmesh/security';
import { ExpertPlacement } from './expert-placement.js';
import { ShardConnection, type DispatchTransport, type ShardChannel } from './shard-connection.js';
import type { ShardSource, ShardView } from './shard-source.js';

/** Why a registry entry was not used: a bad record or plan, or a shard its own answer did not confirm. */
export type RejectedKind = 'shard_record' | 'plan' | 'unverified_shard';

export interface RegistrySourceOptions {
  readonly transport?: DispatchTransport;
  /** Credentials and channel options for the shards; `secured` says whether they are TLS. */
  readonly channel?: ShardChannel;
  readonly secured?: boolean;
  /** Accept plaintext shards beyond loopback (--insecure). */
  readonly insecure?: boolean;
  /** Sees every entry ignored, once per distinct problem (for the log and the metric). */
  readonly onRejected?: (kind: RejectedKind, source: string, reason: string) => void;
  /** Retry interval for a shard whose GetShardInfo failed (it may still be starting). */
  readonly verifyRetryMs?: number;
}

interface Verification {
  readonly shardId: string;
  state: 'pending' | 'ok' | 'failed';
  reason: string;
  retry: NodeJS.Timeout | null;
}

/**
 * A live view of the shards registered in the cluster registry: shards joining, leaving, dying and
 * returning change the routing table without a restart. Nothing in a record is trusted as declared:
 * a record that does not fit the model is ignored (logged and counted), and a shard is routed to only
 * after it has answered GetShardInfo itself (over mutual TLS when configured) with this router's model
 * fingerprint and the shard id its record claims. Shards of another model are refused.
 */
export class RegistryShardSource implements ShardSource {
  private view: ShardView;
  private readonly connections = new Map<string, ShardConnection>();
  private readonly verifications = new Map<string, Verification>();
  private records: readonly ShardRecord[] = [];
  private stopWatching: (() => Promise<void>) | null = null;
  private stopPlanWatch: (() => Promise<void>) | null = null;
  private closed = false;
  /** The cluster's current plan version (0 before any), and the plan version each live shard serves. */
  planVersion = 0;
  private shardPlanVersions = new Map<string, number>();
  /** Shards seen with another model's fingerprint, by id: refused, and reported by /ready. */
  readonly refused = new Map<string, string>();
  /** Problems already reported, so a bad entry is logged once, not on every watch event. */
  private reported = new Set<string>();
  private listeners = new Set<(view: ShardView) => void>();
  /** The stored plan's placement (for grouping experts), when a plan of this model exists. */
  private reference: ExpertPlacement | null = null;
  /** The stored plan of this model, if any (to tell which shards are still loading it). */
  private plan: PlacementPlan | null = null;

  private constructor(
    private readonly config: ModelConfig,
    private readonly fingerprint: string,
    private readonly options: RegistrySourceOptions,
  ) {
    this.view = { connections: [], placement: ExpertPlacement.fromShards(config, [], { allowMissing: true }) };
  }

  static async start(registry: ClusterRegistry, model: { config: ModelConfig; fingerprint: string }, options: RegistrySourceOptions | DispatchTransport = {}): Promise<RegistryShardSource> {
    const source = new RegistryShardSource(model.config, model.fingerprint, typeof options === 'string' ? { transport: options } : options);
    source.stopWatching = await registry.watchShards((shards, invalid) => source.apply(shards, invalid));
    source.stopPlanWatch = await registry.watchPlan((plan) => {
      const problem = plan ? planProblem(plan, model.config, model.fingerprint) : null;
      if (problem) source.reject('plan', 'plan', problem);
      else source.applyPlan(plan);
    });
    return source;
  }

  current(): ShardView {
    return this.view;
  }

  /** Called after every change of the view (for tests and logs). */
  onChange(listener: (view: ShardView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async notReadyReason(): Promise<string | null> {
    const orphans: string[] = [];
    for (const layer of this.config.moeLayers) {
      for (let e = 0; e < this.config.nRoutedExperts; e++) {
        if (this.view.placement.holdersOf(layer, e).length === 0) orphans.push(`${layer}/${e}`);
      }
    }
    if (orphans.length === 0) return null;
    const refused = [...this.refused].map(([id, fp]) => `${id} (model ${fp})`);
    const unverified = [...this.verifications.values()].filter((v) => v.state === 'failed').map((v) => `${v.shardId} (${v.reason})`);
    return (
      `${orphans.length} experts have no live holder (e.g. layer/expert ${orphans.slice(0, 3).join(', ')})` +
      `${refused.length ? `; refused shards of another model: ${refused.join(', ')}` : ''}` +
      `${unverified.length ? `; shards not confirmed by GetShardInfo: ${unverified.slice(0, 5).join(', ')}` : ''}`
    );
  }

  /**
   * Whether router and shards agree on the plan: the current version, and the shards still serving an
   * older one (normal for a moment while a new plan moves experts).
   */
  planStatus(): { version: number; lagging: string[] } {
    return { version: this.planVersion, lagging: [...this.shardPlanVersions].filter(([, v]) => v !== this.planVersion).map(([id]) => id) };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stopPlanWatch?.();
    await this.stopWatching?.();
    for (const v of this.verifications.values()) if (v.retry) clearTimeout(v.retry);
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
  }

  private reject(kind: RejectedKind, source: string, reason: string): void {
    const key = `${kind}|${source}|${reason}`;
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.options.onRejected?.(kind, source, reason);
  }

  /** A record this router may use, or the problem that rules it out. */
  private recordProblem(r: ShardRecord): string | null {
    const problem = shardRecordProblem(r, this.config);
    if (problem) return problem;
    for (const address of [r.address, ...(r.framesAddress ? [r.framesAddress] : [])]) {
      if (!this.options.secured && !this.options.insecure && !isLoopbackHost(hostOf(address))) {
        return `address ${address} is beyond loopback and this router has no TLS: give the router --tls-cert, --tls-key and --tls-ca (or --insecure)`;
      }
    }
    return null;
  }

  private apply(records: readonly ShardRecord[], invalid: readonly RecordProblem[] = []): void {
    for (const p of invalid) this.reject('shard_record', p.source, p.reason);
    this.records = records;
    this.rebuild();
  }

  /** Recomputes the view from the last records and what the shards confirmed. */
  private rebuild(): void {
    if (this.closed) return;
    this.refused.clear();
    // Shards of this model are connected to and verified as soon as they register, before they serve:
    // a shard taking over experts is confirmed by the time it advertises them, so the shard handing
    // them over (which waits only for the registry to show the taker) never leaves them without a
    // holder this router can route to.
    const known = this.records.filter((r) => {
      if (r.modelFingerprint !== this.fingerprint) {
        if (r.health === 'SERVING') this.refused.set(r.shardId, r.modelFingerprint.slice(0, 64));
        return false;
      }
      const problem = this.recordProblem(r);
      if (problem) {
        if (r.health === 'SERVING') this.reject('shard_record', r.shardId, problem);
        return false;
      }
      return true;
    });
    const usable = known.filter((r) => r.health === 'SERVING');
    usable.sort((a, b) => a.shardId.localeCompare(b.shardId));
    this.shardPlanVersions = new Map(usable.filter((r) => r.slot).map((r) => [r.shardId, r.planVersion]));
    const live = new Set(known.map((r) => r.address));
    for (const [address, c] of this.connections) {
      if (!live.has(address)) {
        c.close();
        this.connections.delete(address);
      }
    }
    for (const [key, v] of this.verifications) {
      if (!known.some((r) => verificationKey(r) === key)) {
        if (v.retry) clearTimeout(v.retry);
        this.verifications.delete(key);
      }
    }
    for (const r of known) {
      let c = this.connections.get(r.address);
      if (!c) this.connections.set(r.address, (c = new ShardConnection(r.address, this.options.transport ?? 'stream', this.options.channel ?? {})));
      // Older shards advertise no frames endpoint: their calls stay on gRPC.
      c.useFrames(r.framesAddress);
      if (!this.verifications.has(verificationKey(r))) this.verify(r, c);
    }
    const confirmed = usable.filter((r) => this.verifications.get(verificationKey(r))?.state === 'ok');
    const connections = confirmed.map((r) => this.connections.get(r.address)!);
    const placement = ExpertPlacement.fromShards(
      this.config,
      confirmed.map((r) => ({ address: r.address, layers: r.layers })),
      { allowMissing: true },
    );
    const plan = this.plan;
    const loading = plan ? new Set(loadingNow(plan, usable)) : null;
    const switching = loading ? new Set(confirmed.flatMap((r, i) => (loading.has(r) ? [i] : []))) : null;
    this.view = { connections, placement, ...(this.reference ? { reference: this.reference } : {}), ...(switching?.size ? { switching } : {}) };
    for (const l of this.listeners) l(this.view);
  }

  /** The plan's version, and its placement as the reference that groups each token's experts. */
  private applyPlan(plan: PlacementPlan | null): void {
    this.planVersion = plan?.version ?? 0;
    this.plan = plan && plan.modelFingerprint === this.fingerprint ? plan : null;
    this.reference =
      this.plan
        ? ExpertPlacement.fromShards(
            this.config,
            Object.entries(this.plan.shards).map(([slot, layers]) => ({ address: slot, layers: layers.filter((l) => this.config.moeLayers.includes(l.layer)) })),
            { allowMissing: true },
          )
        : null;
    // Which shards are loading depends on the plan too.
    this.rebuild();
  }

  /** Asks the shard itself who it is; the record is used only once the answer matches it. */
  private verify(record: ShardRecord, connection: ShardConnection): void {
    const key = verificationKey(record);
    const v: Verification = { shardId: record.shardId, state: 'pending', reason: '', retry: null };
    this.verifications.set(key, v);
    connection.info(5_000).then(
      (info) => {
        if (this.verifications.get(key) !== v) return;
        const mismatch =
          info.modelFingerprint !== this.fingerprint
            ? `it serves model ${info.modelFingerprint.slice(0, 64)}, not ${this.fingerprint}`
            : info.shardId !== record.shardId
              ? `it says it is shard ${info.shardId.slice(0, 128)}, not ${record.shardId}`
              : info.hiddenSize !== this.config.hiddenSize
                ? `it has hidden size ${info.hiddenSize}, the model ${this.config.hiddenSize}`
                : null;
        v.state = mismatch ? 'failed' : 'ok';
        v.reason = mismatch ?? '';
        if (mismatch) this.reject('unverified_shard', record.shardId, `record at ${record.address}: ${mismatch}`);
        this.rebuild();
      },
      (e: Error) => {
        if (this.verifications.get(key) !== v || this.closed) return;
        // Unreachable or refused (TLS): it may still be starting; ask again while its record lives.
        v.state = 'failed';
        v.reason = e.message.slice(0, 300);
        this.reject('unverified_shard', record.shardId, `GetShardInfo at ${record.address} failed: ${v.reason}`);
        v.retry = setTimeout(() => {
          if (this.verifications.get(key) === v) {
            this.verifications.delete(key);
            this.rebuild();
          }
        }, this.options.verifyRetryMs ?? 1000);
        v.retry.unref();
        this.rebuild();
      },
    );
  }
}

const verificationKey = (r: ShardRecord): string => `${r.address}|${r.shardId}`;
