import { basename } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Engine } from '@expertmesh/engine';
import type { RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { Tokenizer } from '@expertmesh/tokenizer';
import type { WireDtype } from '@expertmesh/wire';
import { createApiServer } from './api/api-server.js';
import { clusterState } from './dashboard/cluster-state.js';
import { connectToShards } from './experts/connect-shards.js';
import { DEFAULT_DISPATCH, RemoteRoutedExperts } from './experts/remote-routed-experts.js';
import { RegistryShardSource } from './experts/registry-shard-source.js';
import type { ClusterRegistry } from '@expertmesh/discovery';
import { RouterMetrics, startTracing, type TracingHandle } from '@expertmesh/telemetry';
import { EngineLoop } from './serving/engine-loop.js';

export interface RouterOptions {
  readonly modelDir: string;
  readonly host: string;
  readonly port: number;
  readonly servedModelName?: string;
  /** Shards to dispatch the routed experts to; without them (and without a registry) the experts run in this process. */
  readonly shardAddresses?: readonly string[];
  readonly wireDtype: WireDtype;
  readonly execution: ExecutionOptions;
  readonly maxBatchSize: number;
  readonly maxBatchedTokens: number;
  readonly maxWaiting: number;
  readonly kvCacheTokens: number;
  readonly maxModelLen?: number;
  readonly defaultMaxTokens: number;
  readonly reasoningParser: 'deepseek-r1' | 'none';
  /** Find shards in this cluster registry (etcd) instead of by address. */
  readonly registry?: ClusterRegistry;
  /** How long a failing step is retried (a shard may be restarting) before its requests fail. */
  readonly stepRetryMs?: number;
}

export class RouterStartError extends Error {
  override readonly name = 'RouterStartError';
}

/** A running router: HTTP API, engine loop and engine. */
export class Router {
  private constructor(
    readonly url: string,
    private readonly server: Server,
    private readonly loop: EngineLoop,
    private readonly engine: Engine,
    private readonly tracing: TracingHandle,
  ) {}

  static async start(o: RouterOptions): Promise<Router> {
    const metrics = new RouterMetrics();
    const tracing = startTracing('router');
    const tokenizer = await Tokenizer.load(o.modelDir);
    if (!tokenizer) throw new RouterStartError(`${o.modelDir} has no tokenizer files (tokenizer.json, tokenizer_config.json): the API needs them`);
    const config = await loadModelConfig(o.modelDir);
    const addresses = o.shardAddresses ?? null;
    let experts: RoutedExpertsBackend | null = null;
    const engine = await Engine.load(o.modelDir, {
      execution: o.execution,
      kvCacheTokens: o.kvCacheTokens,
      maxBatchSize: o.maxBatchSize,
      maxBatchedTokens: o.maxBatchedTokens,
      onRouting: (layer, routing) => {
        const counts = new Map<number, number>();
        for (const e of routing.expertIds) counts.set(e, (counts.get(e) ?? 0) + 1);
        for (const [e, n] of counts) metrics.expertTokens.inc({ layer: String(layer), expert: String(e) }, n);
      },
      ...(addresses ? { experts: async (model) => (experts = await connectToShards(addresses, model, { wireDtype: o.wireDtype })) } : {}),
      ...(o.registry
        ? {
            experts: async (model) =>
              (experts = new RemoteRoutedExperts(model.config, model.fingerprint, await RegistryShardSource.start(o.registry!, model), { ...DEFAULT_DISPATCH, wireDtype: o.wireDtype })),
          }
        : {}),
    });
    const loop = new EngineLoop(engine, { maxWaiting: o.maxWaiting, retryForMs: o.stepRetryMs ?? 30_000, onStep: (s) => metrics.stepDuration.observe(s) });
    const remote = experts as RoutedExpertsBackend | null;
    if (remote instanceof RemoteRoutedExperts) {
      remote.onCall((c) => {
        metrics.shardCallDuration.observe({ shard: c.shard }, c.roundTripMs / 1000);
        metrics.dispatchBytes.inc({ shard: c.shard, direction: 'sent' }, c.hiddenBytes + c.pairBytes);
        metrics.dispatchBytes.inc({ shard: c.shard, direction: 'received' }, c.responseBytes);
      });
    }
    const modelName = o.servedModelName ?? basename(o.modelDir.replace(/\/+$/, ''));
    const server = createApiServer({
      loop,
      tokenizer,
      modelName,
      maxModelLen: Math.min(o.maxModelLen ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings, o.kvCacheTokens),
      defaultMaxTokens: o.defaultMaxTokens,
      reasoningParser: o.reasoningParser,
      notReadyReason: async () => (remote instanceof RemoteRoutedExperts ? remote.notReadyReason() : null),
      createdAt: Math.floor(Date.now() / 1000),
      metrics,
      clusterState: () => clusterState(modelName, config, engine.model.experts, metrics, loop.running, loop.waiting),
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return new Router(`http://${host}:${address.port}`, server, loop, engine, tracing);
  }

  /** Stops taking requests, closes open connections, then frees the engine and the shards it started. */
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.loop.stop();
    await this.engine.close();
    await this.tracing.shutdown();
  }
}
