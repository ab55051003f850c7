import type { RouterMetrics } from '@expertmesh/telemetry';
import type { ModelConfig } from '@expertmesh/model-config';
import type { ExpertHolderState, RoutedExpertsBackend } from '@expertmesh/routed-experts';

export interface ShardState extends ExpertHolderState {
  /** Mean round trip of the router's calls to it (ms), null before any. */
  readonly meanCallMs: number | null;
  readonly calls: number;
}

export interface RouterMemoryState {
  readonly weightBytes: number;
  readonly kvCacheBytes: number;
  readonly residentBytes: number;
}

export interface RouterMemoryState {
  readonly weightBytes: number;
  readonly kvCacheBytes: number;
  readonly residentBytes: number;
}

export interface ClusterState {
  readonly model: string;
  readonly moeLayers: readonly number[];
  readonly experts: number;
  readonly shards: readonly ShardState[];
  /** Tokens routed per [MoE layer index][expert] since start. */
  readonly load: readonly (readonly number[])[];
  readonly running: number;
  readonly waiting: number;
  /** The router process itself: weights it holds (in their held format), its KV cache, its resident memory. */
  readonly router: RouterMemoryState;
  /** Placement plan version and shards still on an older one (registry clusters only). */
  readonly plan: { readonly version: number; readonly lagging: readonly string[] } | null;
}

/** What /dashboard shows: shards (from GetShardInfo), expert load and per-shard latency (from the metrics). */
export async function clusterState(model: string, config: ModelConfig, experts: RoutedExpertsBackend, metrics: RouterMetrics, running: number, waiting: number, router: RouterMemoryState): Promise<ClusterState> {
  const load = config.moeLayers.map(() => new Array<number>(config.nRoutedExperts).fill(0));
  for (const v of (await metrics.expertTokens.get()).values) {
    const li = config.moeLayers.indexOf(Number(v.labels.layer));
    if (li >= 0) load[li]![Number(v.labels.expert)] = v.value;
  }
  const sums = new Map<string, { sum: number; count: number }>();
  for (const v of (await metrics.shardCallDuration.get()).values) {
    const shard = String(v.labels.shard);
    const e = sums.get(shard) ?? { sum: 0, count: 0 };
    if (v.metricName?.endsWith('_sum')) e.sum = v.value;
    if (v.metricName?.endsWith('_count')) e.count = v.value;
    sums.set(shard, e);
  }
  const shards = (await experts.holders(1000)).map((h): ShardState => {
    const stats = sums.get(h.address);
    return { ...h, meanCallMs: stats && stats.count ? (1000 * stats.sum) / stats.count : null, calls: stats?.count ?? 0 };
  });
  const plan = experts.planStatus();
  return { model, moeLayers: config.moeLayers, experts: config.nRoutedExperts, shards, load, running, waiting, router, plan };
}
