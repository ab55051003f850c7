import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from './build-info.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** An expert shard's Prometheus metrics. */
export class ShardMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'expertmesh_shard_requests_total', help: 'RunExperts requests by outcome (ok, refused, error).', labelNames: ['outcome'], registers: [this.registry] });
  readonly computeSeconds = new Histogram({ name: 'expertmesh_shard_compute_seconds', help: 'Time running the experts of one request.', buckets: BUCKETS, registers: [this.registry] });
  readonly queueSeconds = new Histogram({ name: 'expertmesh_shard_queue_seconds', help: 'Time a request waited in the shard before its experts ran.', buckets: BUCKETS, registers: [this.registry] });
  readonly receivedBytes = new Counter({ name: 'expertmesh_shard_received_bytes_total', help: 'Bytes of hidden states and expert pairs received.', registers: [this.registry] });
  readonly sentBytes = new Counter({ name: 'expertmesh_shard_sent_bytes_total', help: 'Bytes of weighted sums sent back.', registers: [this.registry] });
  readonly registryRejected = new Counter({ name: 'expertmesh_shard_registry_rejected_total', help: 'Registry entries ignored because they do not fit the model (kind=plan).', labelNames: ['kind'], registers: [this.registry] });
  readonly weightBytes = new Gauge({ name: 'expertmesh_shard_weight_bytes', help: 'Bytes of expert weights held, in the format they are held in (label format).', labelNames: ['format'], registers: [this.registry] });
  readonly idleMemoryReturns = new Counter({ name: 'expertmesh_shard_idle_memory_returns_total', help: 'Freed memory handed back to the kernel after a spell without calls (a full V8 collection and malloc_trim).', registers: [this.registry] });
  readonly expertTokens = new Counter({ name: 'expertmesh_shard_expert_tokens_total', help: 'Tokens run through each expert of each MoE layer here.', labelNames: ['layer', 'expert'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'expertmesh_shard_' });
    registerBuildInfo(this.registry, 'expertmesh_shard_');
  }
}
