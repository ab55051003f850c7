import type { ClusterRegistry, ShardRecord } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { ExpertPlacement } from './expert-placement.js';
import { ShardConnection, type DispatchTransport } from './shard-connection.js';
import type { ShardSource, ShardView } from './shard-source.js';

/**
 * A live view of the shards registered in the cluster registry: shards joining, leaving, dying and
 * returning change the routing table without a restart. Shards of another model are refused.
 */
export class RegistryShardSource implements ShardSource {
  private view: ShardView;
  private readonly connections = new Map<string, ShardConnection>();
  private stopWatching: (() => Promise<void>) | null = null;
  private stopPlanWatch: (() => Promise<void>) | null = null;
  /** The cluster's current plan version (0 before any), and the plan version each live shard serves. */
  planVersion = 0;
  private shardPlanVersions = new Map<string, number>();
  /** Shards seen with another model's fingerprint, by id: refused, and reported by /ready. */
  readonly refused = new Map<string, string>();
  private listeners = new Set<(view: ShardView) => void>();

  private constructor(
    private readonly config: ModelConfig,
    private readonly fingerprint: string,
    private readonly transport: DispatchTransport,
  ) {
    this.view = { connections: [], placement: ExpertPlacement.fromShards(config, [], { allowMissing: true }) };
  }

  static async start(registry: ClusterRegistry, model: { config: ModelConfig; fingerprint: string }, transport: DispatchTransport = 'stream'): Promise<RegistryShardSource> {
    const source = new RegistryShardSource(model.config, model.fingerprint, transport);
    source.stopWatching = await registry.watchShards((shards) => source.apply(shards));
    source.stopPlanWatch = await registry.watchPlan((plan) => (source.planVersion = plan?.version ?? 0));
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
    return `${orphans.length} experts have no live holder (e.g. layer/expert ${orphans.slice(0, 3).join(', ')})${refused.length ? `; refused shards of another model: ${refused.join(', ')}` : ''}`;
  }

  /**
   * Whether router and shards agree on the plan: the current version, and the shards still serving an
   * older one (normal for a moment while a new plan moves experts).
   */
  planStatus(): { version: number; lagging: string[] } {
    return { version: this.planVersion, lagging: [...this.shardPlanVersions].filter(([, v]) => v !== this.planVersion).map(([id]) => id) };
  }

  async close(): Promise<void> {
    await this.stopPlanWatch?.();
    await this.stopWatching?.();
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
  }

  private apply(records: readonly ShardRecord[]): void {
    this.refused.clear();
    const usable = records.filter((r) => {
      if (r.health !== 'SERVING') return false;
      if (r.modelFingerprint !== this.fingerprint) {
        this.refused.set(r.shardId, r.modelFingerprint);
        return false;
      }
      return true;
    });
    usable.sort((a, b) => a.shardId.localeCompare(b.shardId));
    this.shardPlanVersions = new Map(usable.filter((r) => r.slot).map((r) => [r.shardId, r.planVersion]));
    const live = new Set(usable.map((r) => r.address));
    for (const [address, c] of this.connections) {
      if (!live.has(address)) {
        c.close();
        this.connections.delete(address);
      }
    }
    const connections = usable.map((r) => {
      let c = this.connections.get(r.address);
      if (!c) this.connections.set(r.address, (c = new ShardConnection(r.address, this.transport)));
      return c;
    });
    const placement = ExpertPlacement.fromShards(
      this.config,
      usable.map((r) => ({ address: r.address, layers: r.layers.filter((l) => this.config.moeLayers.includes(l.layer)) })),
      { allowMissing: true },
    );
    this.view = { connections, placement };
    for (const l of this.listeners) l(this.view);
  }
}
