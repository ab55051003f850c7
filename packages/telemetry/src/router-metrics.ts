import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from './build-info.js';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** The router's Prometheus metrics (docs/observability.md says what each means). */
export class RouterMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'expertmesh_requests_total', help: 'API requests by endpoint and outcome (ok, client_error, rejected, error, aborted).', labelNames: ['endpoint', 'outcome'], registers: [this.registry] });
  readonly timeToFirstToken = new Histogram({ name: 'expertmesh_time_to_first_token_seconds', help: 'Time from request arrival to its first generated token.', buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly timePerOutputToken = new Histogram({ name: 'expertmesh_time_per_output_token_seconds', help: 'Mean time between output tokens of a request, after the first.', buckets: TOKEN_BUCKETS, registers: [this.registry] });
  readonly requestDuration = new Histogram({ name: 'expertmesh_request_duration_seconds', help: 'End-to-end request latency.', labelNames: ['endpoint'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly promptTokens = new Counter({ name: 'expertmesh_prompt_tokens_total', help: 'Prompt tokens of accepted requests.', registers: [this.registry] });
  readonly generatedTokens = new Counter({ name: 'expertmesh_generation_tokens_total', help: 'Tokens generated (rate() gives tokens per second).', registers: [this.registry] });
  readonly queueLength = new Gauge({ name: 'expertmesh_queue_length', help: 'Requests waiting for a batch slot or KV cache memory.', registers: [this.registry] });
  readonly runningSequences = new Gauge({ name: 'expertmesh_running_sequences', help: 'Sequences in the running batch.', registers: [this.registry] });
  readonly kvCacheUsage = new Gauge({ name: 'expertmesh_kv_cache_usage_ratio', help: 'Fraction of the latent KV cache blocks in use (0-1).', registers: [this.registry] });
  readonly prefixCacheQueries = new Counter({ name: 'expertmesh_prefix_cache_queries_tokens_total', help: 'Prompt tokens looked up in the prefix cache.', registers: [this.registry] });
  readonly prefixCacheHits = new Counter({ name: 'expertmesh_prefix_cache_hits_tokens_total', help: 'Prompt tokens found in the prefix cache (not computed again).', registers: [this.registry] });
  readonly prefixCacheHitRate = new Gauge({ name: 'expertmesh_prefix_cache_hit_rate', help: 'Prompt tokens found in the prefix cache over those looked up, since start (0-1).', registers: [this.registry] });
  readonly prefixCacheEvictions = new Counter({ name: 'expertmesh_prefix_cache_evicted_blocks_total', help: 'Cached KV blocks reused for other tokens (evicted least recently used, only when the cache needed room).', registers: [this.registry] });
  readonly preemptions = new Counter({ name: 'expertmesh_preemptions_total', help: 'Sequences whose KV cache was taken back when it ran short (recomputed later).', registers: [this.registry] });
  readonly stepDuration = new Histogram({ name: 'expertmesh_step_duration_seconds', help: 'Duration of one engine step (a batch of decode tokens and prefill chunks).', buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly shardCallDuration = new Histogram({ name: 'expertmesh_shard_call_duration_seconds', help: 'Round trip of one expert dispatch to a shard, seen by the router.', labelNames: ['shard'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly dispatchBytes = new Counter({ name: 'expertmesh_dispatch_bytes_total', help: 'Bytes of hidden states and expert pairs sent to shards (direction=sent) and sums received (direction=received).', labelNames: ['shard', 'direction'], registers: [this.registry] });
  readonly registryRejected = new Counter({ name: 'expertmesh_registry_rejected_total', help: 'Registry entries ignored: kind=shard_record (not a valid record, or experts and layers the model does not have), plan, unverified_shard (GetShardInfo did not confirm it).', labelNames: ['kind'], registers: [this.registry] });
  readonly authFailures = new Counter({ name: 'expertmesh_auth_failures_total', help: 'API requests refused for a missing or wrong API key.', registers: [this.registry] });
  readonly weightBytes = new Gauge({ name: 'expertmesh_router_weight_bytes', help: 'Bytes of weights the router holds (dense part, LM head, embeddings; routed experts when in-process), in the format held.', registers: [this.registry] });
  readonly kvCacheBytes = new Gauge({ name: 'expertmesh_router_kv_cache_bytes', help: 'Bytes of the latent KV cache, allocated up front.', registers: [this.registry] });
  readonly shardSuspicions = new Counter({
    name: 'expertmesh_shard_suspicions_total',
    help: 'Times a shard became suspect (reason: failed call or broken connection, deadline, non_finite result); its work went to replicas.',
    labelNames: ['shard', 'reason'],
    registers: [this.registry],
  });
  readonly shardSuspect = new Gauge({ name: 'expertmesh_shard_suspect', help: '1 while the router routes around a shard (until its health check passes), else 0.', labelNames: ['shard'], registers: [this.registry] });
  readonly resentCalls = new Counter({ name: 'expertmesh_dispatch_resent_calls_total', help: 'Shard calls carrying rows another shard failed in the same step.', labelNames: ['shard'], registers: [this.registry] });
  readonly hedges = new Counter({
    name: 'expertmesh_dispatch_hedges_total',
    help: 'Late shard calls hedged on other holders of their experts (outcome=sent), and how each came out: won (the hedge answered first, the late answer was discarded), wasted (the late shard answered first), failed (a hedge call failed).',
    labelNames: ['shard', 'outcome'],
    registers: [this.registry],
  });
  readonly expertTokens = new Counter({ name: 'expertmesh_expert_tokens_total', help: 'Tokens routed to each expert of each MoE layer (the load placement balances).', labelNames: ['layer', 'expert'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'expertmesh_router_' });
    registerBuildInfo(this.registry, 'expertmesh_router_');
  }
}
