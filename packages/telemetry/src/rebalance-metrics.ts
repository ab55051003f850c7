import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The metric a router publishes its windowed per-expert load under, and the since-start counter. */
export const WINDOW_METRIC = 'expertmesh_expert_window_tokens';
export const TOTAL_METRIC = 'expertmesh_expert_tokens_total';

/** The load and rebalancing metrics of a router (docs/observability.md), in the router's registry. */
export class RebalanceMetrics {
  readonly imbalance: Gauge;
  readonly rebalances: Counter;
  readonly bytesMoved: Counter;
  readonly expertsMoved: Counter;
  readonly switchSeconds: Histogram;
  readonly deadSlotsDropped: Counter;
  readonly redundantDropped: Counter;
  readonly skipped: Counter;

  /** `windowLoad`: tokens per expert of each layer over the load window, read at every scrape. */
  constructor(registry: Registry, windowLoad: () => ReadonlyMap<number, readonly number[]>) {
    const registers = [registry];
    new Gauge({
      name: WINDOW_METRIC,
      help: `Tokens routed to each expert of each MoE layer over the last load window (--load-window); what \`expertmesh plan --load-from\` and the rebalancer read.`,
      labelNames: ['layer', 'expert'],
      registers,
      collect(this: Gauge) {
        this.reset();
        for (const [layer, row] of windowLoad()) row.forEach((v, e) => v > 0 && this.set({ layer: String(layer), expert: String(e) }, v));
      },
    });
    this.imbalance = new Gauge({
      name: 'expertmesh_expert_imbalance_ratio',
      help: 'Max over mean expected tokens per shard in each MoE layer under the load window: phase=current (the plan in force, at the last check), before and after (the last rebalance).',
      labelNames: ['layer', 'phase'],
      registers,
    });
    this.rebalances = new Counter({ name: 'expertmesh_rebalances_total', help: 'New plans stored by this router because the measured imbalance passed --rebalance-threshold.', registers });
    this.bytesMoved = new Counter({ name: 'expertmesh_rebalance_bytes_moved_total', help: 'Bytes of experts shards had to load for the plans this router stored (in the format shards hold them).', registers });
    this.expertsMoved = new Counter({ name: 'expertmesh_rebalance_experts_moved_total', help: 'Expert copies shards had to load for the plans this router stored.', registers });
    this.deadSlotsDropped = new Counter({ name: 'expertmesh_dead_slots_dropped_total', help: 'Plan slots this router dropped because no live shard claimed them for longer than --dead-slot-grace (their experts re-homed on live shards).', registers });
    this.redundantDropped = new Counter({
      name: 'expertmesh_rebalance_redundant_dropped_total',
      help: "Redundant expert copies per layer the stored plans gave fewer than the plan in force had, because those did not fit the shards' memory budget (the hottest experts keep theirs).",
      registers,
    });
    this.skipped = new Counter({
      name: 'expertmesh_rebalance_skipped_total',
      help: 'Checks whose load passed --rebalance-threshold but stored no plan: reason="over_budget" (not even one copy of each expert fits the memory budget; the plan in force stays).',
      labelNames: ['reason'],
      registers,
    });
    this.switchSeconds = new Histogram({
      name: 'expertmesh_rebalance_switch_seconds',
      help: 'Time from storing a plan to every shard of it reporting that plan (new experts loaded, old ones handed over).',
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    });
  }
}
