import { basename } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Engine, type KvAdmission, type MicroBatchCount } from '@expertmesh/engine';
import { readCheckpointIdentity, uniformWeightFormats, type WeightFormats } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { Tokenizer } from '@expertmesh/tokenizer';
import { DEFAULT_MAX_TOKENS_PER_CALL, maxCallMessageBytes, type WireDtype } from '@expertmesh/wire';
import { checkExposure, type TlsMaterial } from '@expertmesh/security';
import { requireModelDir } from '@expertmesh/weights';
import { RouterMetrics, startTracing, type TracingHandle } from '@expertmesh/telemetry';
import { createApiServer } from './api/api-server.js';
import { clusterState } from './dashboard/cluster-state.js';
import { checkExpertsPlacement, openExperts, type ExpertsPlacement } from './experts/open-experts.js';
import type { DispatchOptions } from './experts/remote-routed-experts.js';
import { shardChannel, type ExpertTransport } from './experts/shard-connection.js';
import { EngineLoop } from './serving/engine-loop.js';
import { setHeapGrowth } from './serving/heap-growth.js';
import { OutputConstraints } from './structured/output-constraints.js';
import { PromptTokenizer } from './text/prompt-tokenizer.js';
import { routerLoad, type RouterLoad } from './rebalance/router-load.js';
import type { RebalanceOptions } from './rebalance/rebalancer.js';

export interface RouterOptions {
  readonly modelDir: string;
  readonly host: string;
  readonly port: number;
  readonly servedModelName?: string;
  /** Where the routed experts run: in this process, on shards by address, or on shards a registry lists. */
  readonly experts: ExpertsPlacement;
  readonly wireDtype: WireDtype;
  /** Expert calls over gRPC (default) or over the shards' frames endpoints where they advertise one (`--expert-transport`). */
  readonly expertTransport?: ExpertTransport;
  /** Dtype of the sums shards return (bfloat16 unless given). */
  readonly combineDtype?: DispatchOptions['combineDtype'];
  /** Adaptive dispatch deadline (DEFAULT_DEADLINE unless given). */
  readonly dispatchDeadline?: DispatchOptions['deadline'];
  /** When late calls are hedged on other holders (DEFAULT_HEDGE unless given). */
  readonly dispatchHedge?: DispatchOptions['hedge'];
  readonly execution: ExecutionOptions;
  /**
   * The format each part's weights are held in here (the in-process routed experts' too; shards choose their own).
   * Default: every part `auto`, the checkpoint's own format.
   */
  readonly weightFormats?: WeightFormats;
  readonly maxBatchSize: number;
  readonly maxBatchedTokens: number;
  readonly maxWaiting: number;
  readonly kvCacheTokens: number;
  /** Share full KV blocks of common prefixes between requests (default on). */
  readonly prefixCaching?: boolean;
  /** KV cache on demand with preemption (default), or reserved up front for prompt + max_tokens. */
  readonly kvAdmission?: KvAdmission;
  /** Micro-batches per step: 2 overlaps one's expert calls with the other's attention (default 1: measured faster on CPU shards). */
  readonly microBatches?: MicroBatchCount;
  readonly maxModelLen?: number;
  readonly defaultMaxTokens: number;
  readonly reasoningParser: 'deepseek-r1' | 'none';
  /** How long a failing step is retried (a shard may be restarting) before its requests fail. */
  readonly stepRetryMs?: number;
  /** Mutual TLS to shards (client certificate, and the CA shard certificates must chain to); plaintext when absent. */
  readonly tls?: TlsMaterial | null;
  /** Bearer keys the HTTP API requires (none: no key asked, allowed only on loopback unless `insecure`). */
  readonly apiKeys?: readonly string[];
  /** Endpoints open without a key besides /health and /ready. */
  readonly publicEndpoints?: readonly ('metrics' | 'dashboard')[];
  /** Allow a non-loopback bind without keys, and plaintext shards beyond loopback (--insecure). */
  readonly insecure?: boolean;
  /** Prompt text accepted at most in UTF-8 bytes (default: 16 bytes per token of the context, at least 1 MiB). */
  readonly maxPromptBytes?: number;
  /** The sliding window of tokens per expert (default 60 s): what `plan --load-from` and the rebalancer read. */
  readonly loadWindowMs?: number;
  /** Run the closed rebalancing loop (needs a registry placement). */
  readonly rebalance?: RebalanceOptions;
}

export class RouterStartError extends Error {
  override readonly name = 'RouterStartError';
}

/** A running router: HTTP API, engine loop and engine. */
export class Router {
  private constructor(
    readonly url: string,
    /** Where start-up time went, in ms per phase (tokenizer, checkpoint identity, experts, engine, listen). */
    readonly startupMs: Readonly<Record<string, number>>,
    private readonly server: Server,
    private readonly loop: EngineLoop,
    private readonly engine: Engine,
    private readonly tracing: TracingHandle,
    private readonly promptTokenizer: PromptTokenizer,
    private readonly lifecycle: { draining: boolean },
  ) {}

  /**
   * Builds the experts backend first, hands it to the engine, and watches it through the backend
   * interface (metrics, readiness, the cluster view) whatever it is.
   */
  static async start(o: RouterOptions): Promise<Router> {
    const placement = checkExpertsPlacement(o.experts);
    const formats = o.weightFormats ?? uniformWeightFormats('auto');
    const apiKeys = o.apiKeys ?? [];
    checkExposure({ endpoint: 'HTTP API', host: o.host, secured: apiKeys.length > 0, insecure: o.insecure ?? false, howToSecure: 'give --api-key (or EXPERTMESH_API_KEY)' });
    await requireModelDir(o.modelDir);
    const startupMs: Record<string, number> = {};
    let phaseStart = performance.now();
    const phase = (name: string): void => {
      const now = performance.now();
      startupMs[name] = Math.round(now - phaseStart);
      phaseStart = now;
    };
    const metrics = new RouterMetrics();
    const tokenizer = await Tokenizer.load(o.modelDir);
    if (!tokenizer) throw new RouterStartError(`${o.modelDir} has no tokenizer files (tokenizer.json, tokenizer_config.json): the API needs them`);
    phase('tokenizer');
    const identity = await readCheckpointIdentity(o.modelDir);
    phase('checkpoint_identity');
    const config = identity.config;
    const maxMessageBytes = maxCallMessageBytes({ hiddenSize: config.hiddenSize, maxTokensPerCall: Math.max(DEFAULT_MAX_TOKENS_PER_CALL, o.maxBatchedTokens + o.maxBatchSize), expertsPerToken: config.numExpertsPerTok });
    const experts = await openExperts(placement, { ...identity, modelDir: o.modelDir }, o.execution, {
      wireDtype: o.wireDtype,
      ...(o.combineDtype ? { combineDtype: o.combineDtype } : {}),
      ...(o.dispatchDeadline ? { deadline: o.dispatchDeadline } : {}),
      ...(o.dispatchHedge ? { hedge: o.dispatchHedge } : {}),
      // Messages to and from shards are bounded by what one step can carry for this model.
      channel: shardChannel(o.tls ?? null, maxMessageBytes, o.expertTransport ?? 'grpc'),
      secured: Boolean(o.tls),
      insecure: o.insecure ?? false,
      onRejected: (kind, source, reason) => {
        metrics.registryRejected.inc({ kind });
        process.stderr.write(`expertmesh serve: ignoring ${kind.replace('_', ' ')} ${source.slice(0, 200)}: ${reason.slice(0, 500)}\n`);
      },
    }, formats.experts);
    phase('experts');
    const load = routerLoad(config, identity.fingerprint, metrics.registry, o.loadWindowMs ?? 60_000, placement.kind === 'registry' ? placement.registry : null, o.rebalance);
    experts.observe({
      onRouting: (layer, routing) => {
        load.window.add(layer, routing.expertIds);
        const counts = new Map<number, number>();
        for (const e of routing.expertIds) counts.set(e, (counts.get(e) ?? 0) + 1);
        for (const [e, n] of counts) metrics.expertTokens.inc({ layer: String(layer), expert: String(e) }, n);
      },
      onCall: (c) => {
        metrics.shardCallDuration.observe({ shard: c.shard }, c.roundTripMs / 1000);
        metrics.dispatchBytes.inc({ shard: c.shard, direction: 'sent' }, c.hiddenBytes + c.pairBytes);
        metrics.dispatchBytes.inc({ shard: c.shard, direction: 'received' }, c.responseBytes);
        if (c.resent) metrics.resentCalls.inc({ shard: c.shard });
      },
      onHedge: (h) => metrics.hedges.inc({ shard: h.shard, outcome: h.outcome }),
      onHolderHealth: (h) => {
        if (h.gone) {
          // Not a recovery: the router no longer knows this shard (if it registers again, it starts afresh).
          metrics.shardSuspect.remove({ shard: h.shard });
          process.stderr.write(`[router] shard ${h.shard} left the registry while suspect (after ${Math.round(h.suspectMs)} ms)\n`);
          return;
        }
        metrics.shardSuspect.set({ shard: h.shard }, h.suspect ? 1 : 0);
        if (h.suspect) metrics.shardSuspicions.inc({ shard: h.shard, reason: h.reason! });
        process.stderr.write(
          h.suspect ? `[router] shard ${h.shard} is suspect (${h.reason}): ${h.error!.message}\n` : `[router] shard ${h.shard} passed its health check after ${Math.round(h.suspectMs)} ms: it gets work again\n`,
        );
      },
    });
    let engine: Engine;
    try {
      engine = await Engine.load(o.modelDir, {
        experts,
        execution: o.execution,
        weightDtype: formats,
        kvCacheTokens: o.kvCacheTokens,
        maxBatchSize: o.maxBatchSize,
        maxBatchedTokens: o.maxBatchedTokens,
        prefixCaching: o.prefixCaching ?? true,
        kvAdmission: o.kvAdmission ?? 'on-demand',
        microBatches: o.microBatches ?? 1,
        // Routed experts on shards: the shared expert's run hides part of their round trip.
        sharedExperts: placement.kind === 'in-process' ? 'in-layer' : 'beside-routed',
      });
    } catch (e) {
      await experts.close();
      throw e;
    }
    // What this process holds, in the format held: the model's weights, in-process experts, the KV cache.
    const memory = { weightBytes: engine.model.denseWeightBytes + experts.heldWeightBytes(), kvCacheBytes: engine.kvCacheBytes };
    metrics.weightBytes.set(memory.weightBytes);
    metrics.kvCacheBytes.set(memory.kvCacheBytes);
    phase('engine');
    const promptTokenizer = await PromptTokenizer.start(o.modelDir, (text, addBos) => tokenizer.encode(text, addBos === undefined ? {} : { addBos }));
    const tracing = startTracing('router');
    // Before serving: V8's own sizing traps this heap in a full collection every ~0.4 s after its first one under load.
    setHeapGrowth();
    const loop = new EngineLoop(engine, { maxWaiting: o.maxWaiting, retryForMs: o.stepRetryMs ?? 30_000, onStep: (s) => metrics.stepDuration.observe(s) });
    // A step waiting for a holder goes on as soon as one is back, not at the end of its back-off.
    experts.observe({ onHoldersAdded: () => loop.retryNow() });
    const modelName = o.servedModelName ?? basename(o.modelDir.replace(/\/+$/, ''));
    const lifecycle = { draining: false };
    const server = createApiServer({
      draining: () => lifecycle.draining,
      loop,
      tokenizer,
      vocabSize: config.vocabSize,
      outputConstraints: new OutputConstraints(tokenizer, config.vocabSize, config.eosTokenIds),
      promptTokenizer,
      maxPromptBytes: o.maxPromptBytes ?? Math.max(2 ** 20, 16 * Math.min(o.maxModelLen ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings, o.kvCacheTokens)),
      apiKeys,
      publicEndpoints: new Set(o.publicEndpoints ?? []),
      modelName,
      maxModelLen: Math.min(o.maxModelLen ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings, o.kvCacheTokens),
      defaultMaxTokens: o.defaultMaxTokens,
      reasoningParser: o.reasoningParser,
      notReadyReason: () => experts.notReadyReason(),
      createdAt: Math.floor(Date.now() / 1000),
      metrics,
      clusterState: () => clusterState(modelName, config, experts, metrics, loop.running, loop.waiting, { ...memory, residentBytes: process.memoryUsage().rss }),
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(o.port, o.host, () => resolve());
      });
    } catch (e) {
      // Nothing of a router that cannot serve may linger: its caller exits with this error.
      await engine.close();
      await promptTokenizer.close();
      await tracing.shutdown();
      const err = e as NodeJS.ErrnoException;
      throw new RouterStartError(
        `cannot listen on ${o.host}:${o.port}: ${err.code === 'EADDRINUSE' ? 'the address is in use (EADDRINUSE): stop what uses it or choose another --port' : err.message}`,
        { cause: e },
      );
    }
    phase('listen');
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const router = new Router(`http://${host}:${address.port}`, startupMs, server, loop, engine, tracing, promptTokenizer, lifecycle);
    router.load = load;
    load.rebalancer?.start();
    return router;
  }

  /**
   * Drains before a shutdown: /ready answers 503 (load balancers and Kubernetes stop sending here), new
   * requests get 503 with Retry-After, and the requests already accepted run to their end, for at most
   * `timeoutMs`. Resolves with how many were still running or waiting when it gave up (0: all finished).
   */
  async drain(timeoutMs: number): Promise<number> {
    this.lifecycle.draining = true;
    const deadline = performance.now() + timeoutMs;
    while (this.loop.running + this.loop.waiting > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    return this.loop.running + this.loop.waiting;
  }

  /** The expert load window and the rebalancer, if any. */
  load: RouterLoad | null = null;

  /** Stops taking requests, closes open connections, then frees the engine and the shards it started. */
  async stop(): Promise<void> {
    await this.load?.rebalancer?.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.loop.stop();
    await this.engine.close();
    await this.promptTokenizer.close();
    await this.tracing.shutdown();
  }
}

