import { z } from 'zod';
import { etcdSecurityFromFlags, openRegistry, REGISTRY_SECURITY_USAGE } from '@expertmesh/discovery';
import { InsecureExposureError, loadTls } from '@expertmesh/security';
import { LocalCluster } from '@expertmesh/local-cluster';
import { loadModelConfig } from '@expertmesh/model-config';
import { untilShutdownSignal, withTimeout } from '@expertmesh/process-lifecycle';
import { DEFAULT_DEADLINE, DEFAULT_HEDGE, Router } from '@expertmesh/router';
import { UsageError } from '../cli-error.js';
import { REBALANCE_USAGE, rebalanceFlagSchema, rebalanceFlagSpec, rebalanceOptions } from '../rebalance-flags.js';
import { etcdFlagSchema, etcdFlagSpec, executionFlagSchema, executionFlagSpec, executionFromFlags, numberFlag, parseFlags, tlsFlagSchema, tlsFlagSpec, weightDtypeFlagSchema, weightDtypeFlagSpec, weightFormatsFromFlags, WEIGHT_DTYPE_USAGE, WEIGHT_DTYPE_HELP } from '../flags.js';

export const serveUsage = `expertmesh serve --model DIR [--port 8000] [--host 127.0.0.1] [--served-model-name NAME]
    [--shards N | --shard-addresses HOST:PORT,… | --cluster NAME --etcd URL[,URL…] | --registry URL] [--wire-dtype bfloat16|float32|fp8]
    [--expert-transport grpc|frames]
    [--combine-dtype bfloat16|float32] [--dispatch-deadline-ms 30000] [--dispatch-deadline-min-ms 200] [--dispatch-deadline-p99-multiple 4]
    [--dispatch-hedge-p99-multiple 1.5] [--dispatch-hedge-min-ms 10]
    [--max-batch-size 64] [--max-batched-tokens 512] [--max-waiting 256] [--kv-cache-tokens 65536]
    [--no-prefix-caching] [--kv-admission on-demand|reserve] [--micro-batches 1|2]
    [--max-model-len N] [--default-max-tokens 1024] [--reasoning-parser deepseek-r1|none]
    [--step-retry-seconds 30] [--execution-provider cpu|cuda] [--intra-op-threads N] [--intra-op-spin run|off] [--expert-kernel auto|onnxruntime|native] ${WEIGHT_DTYPE_USAGE}
    [--api-key KEY]… [--public-endpoints metrics,dashboard] [--max-prompt-bytes N]
    [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--insecure] [--drain-seconds 30] ${REGISTRY_SECURITY_USAGE}
    ${REBALANCE_USAGE}
  Serves the OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions, /health, /ready).
  --api-key (repeatable; or EXPERTMESH_API_KEY, comma-separated) makes every endpoint but /health and /ready ask for
  Authorization: Bearer KEY. --tls-* dial shards over mutual TLS. A non-loopback --host without a key refuses to start
  unless --insecure. The embedded registry's token comes from EXPERTMESH_REGISTRY_TOKEN.
  SIGTERM or SIGINT drains: /ready answers 503, new requests get 503, the requests in flight finish (for at most
  --drain-seconds), then the router exits.
  The router counts tokens per expert over --load-window (metric expertmesh_expert_window_tokens, read by
  \`expertmesh plan --load-from\`). With a registry, --rebalance-interval runs the closed loop: each interval, when some
  layer's max over mean tokens per shard passes --rebalance-threshold (and the window holds --rebalance-min-tokens),
  it stores a re-plan that balances the measured load, moving as few experts as it can; shards switch with no pause.
  A plan slot that no live shard claims for --dead-slot-grace (a shard killed for good: its lease ran out and nothing
  took its slot again) is dropped: the loop stores a plan without it, its experts re-homed on the live shards.
  A shard call that fails, or takes longer than --dispatch-deadline-p99-multiple times the shard's recent p99 round
  trip (never less than --dispatch-deadline-min-ms, never more than --dispatch-deadline-ms), makes the shard suspect:
  its work goes to replicas in the same step, and it gets none until its gRPC health check passes. A call whose rows
  no replica could take waits ten times as long (within --dispatch-deadline-ms): suspecting the only holder cannot help.
  A call not answered after --dispatch-hedge-p99-multiple times the shard's recent p99 round trip (at least
  --dispatch-hedge-min-ms) whose every row another holder also serves (e.g. experts moving in a rebalance, replicas)
  is hedged: its rows go to those holders too and the first answer is used (metric expertmesh_dispatch_hedges_total);
  the shard is not suspected for it. 0 turns hedging off. Rows of experts with two holders go first to the one not
  loading a new plan.
  --expert-transport frames sends expert calls as length-prefixed frames over one TLS socket per shard (no HTTP/2;
  the same messages, mutual TLS and failover) to shards that advertise a frames endpoint (\`expertmesh shard
  --frames-listen\`; --shards N starts them so), and over gRPC to those that do not. Default grpc.
  --micro-batches 2 splits each step in two micro-batches that overlap one's expert calls with the other's attention
  (same results; default 1, which measures faster on CPU shards: docs/benchmarks.md).
  ${WEIGHT_DTYPE_HELP}`;

export async function serve(argv: readonly string[]): Promise<number> {
  // Where start-up time goes before the router's own phases: Node, the TypeScript loader and imports.
  const processAndImportsMs = Math.round(performance.now());
  const env = process.env;
  const flags = parseFlags(
    argv,
    {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'served-model-name': { type: 'string' },
      shards: { type: 'string' },
      'shard-addresses': { type: 'string' },
      'wire-dtype': { type: 'string' },
      'expert-transport': { type: 'string' },
      'combine-dtype': { type: 'string' },
      'dispatch-deadline-ms': { type: 'string' },
      'dispatch-deadline-min-ms': { type: 'string' },
      'dispatch-deadline-p99-multiple': { type: 'string' },
      'dispatch-hedge-p99-multiple': { type: 'string' },
      'dispatch-hedge-min-ms': { type: 'string' },
      'max-batch-size': { type: 'string' },
      'max-batched-tokens': { type: 'string' },
      'max-waiting': { type: 'string' },
      'kv-cache-tokens': { type: 'string' },
      'no-prefix-caching': { type: 'boolean' },
      'kv-admission': { type: 'string' },
      'micro-batches': { type: 'string' },
      'max-model-len': { type: 'string' },
      'default-max-tokens': { type: 'string' },
      'reasoning-parser': { type: 'string' },
      cluster: { type: 'string' },
      etcd: { type: 'string' },
      registry: { type: 'string' },
      'step-retry-seconds': { type: 'string' },
      'api-key': { type: 'string', multiple: true },
      'public-endpoints': { type: 'string' },
      'max-prompt-bytes': { type: 'string' },
      'drain-seconds': { type: 'string' },
      ...executionFlagSpec,
      ...tlsFlagSpec,
      ...etcdFlagSpec,
      ...weightDtypeFlagSpec,
      ...rebalanceFlagSpec,
    },
    z.object({
      model: z.string().default(env.EXPERTMESH_MODEL ?? ''),
      port: numberFlag((n) => n.int().min(0).max(65535)).default(Number(env.EXPERTMESH_PORT ?? 8000)),
      host: z.string().default(env.EXPERTMESH_HOST ?? '127.0.0.1'),
      'served-model-name': z.string().optional(),
      shards: numberFlag((n) => n.int().nonnegative()).default(0),
      'shard-addresses': z.string().regex(/^[^,]+(,[^,]+)*$/, 'comma-separated HOST:PORT list').optional(),
      'wire-dtype': z.enum(['bfloat16', 'float32', 'fp8']).default('bfloat16'),
      'expert-transport': z.enum(['grpc', 'frames']).default((env.EXPERTMESH_EXPERT_TRANSPORT as 'grpc' | 'frames' | undefined) ?? 'grpc'),
      'combine-dtype': z.enum(['bfloat16', 'float32']).default('bfloat16'),
      'dispatch-deadline-ms': numberFlag((n) => n.positive()).default(DEFAULT_DEADLINE.maxMs),
      'dispatch-deadline-min-ms': numberFlag((n) => n.positive()).default(DEFAULT_DEADLINE.minMs),
      'dispatch-deadline-p99-multiple': numberFlag((n) => n.min(1)).default(DEFAULT_DEADLINE.p99Multiple),
      'dispatch-hedge-p99-multiple': numberFlag((n) => n.min(0)).default(DEFAULT_HEDGE.p99Multiple),
      'dispatch-hedge-min-ms': numberFlag((n) => n.min(0)).default(DEFAULT_HEDGE.minMs),
      'max-batch-size': numberFlag((n) => n.int().positive()).default(64),
      'max-batched-tokens': numberFlag((n) => n.int().positive()).default(512),
      'max-waiting': numberFlag((n) => n.int().nonnegative()).default(256),
      'kv-cache-tokens': numberFlag((n) => n.int().positive()).default(65536),
      'no-prefix-caching': z.boolean().default(false),
      'kv-admission': z.enum(['on-demand', 'reserve']).default('on-demand'),
      'micro-batches': z
        .enum(['1', '2'])
        .default('1')
        .transform((v) => Number(v) as 1 | 2),
      'max-model-len': numberFlag((n) => n.int().positive()).optional(),
      'default-max-tokens': numberFlag((n) => n.int().positive()).default(1024),
      'reasoning-parser': z.enum(['deepseek-r1', 'none']).default('deepseek-r1'),
      cluster: z.string().default(env.EXPERTMESH_CLUSTER ?? ''),
      etcd: z.string().default(env.EXPERTMESH_ETCD ?? ''),
      registry: z.string().default(env.EXPERTMESH_REGISTRY ?? ''),
      'step-retry-seconds': numberFlag((n) => n.nonnegative()).default(30),
      'api-key': z.array(z.string().min(1)).default([]),
      'public-endpoints': z
        .string()
        .regex(/^(metrics|dashboard)(,(metrics|dashboard))*$/, 'a comma-separated list of metrics, dashboard')
        .transform((s) => s.split(',') as ('metrics' | 'dashboard')[])
        .optional(),
      'max-prompt-bytes': numberFlag((n) => n.int().positive()).optional(),
      'drain-seconds': numberFlag((n) => n.nonnegative()).default(30),
      ...executionFlagSchema,
      ...tlsFlagSchema,
      ...etcdFlagSchema,
      ...weightDtypeFlagSchema,
      ...rebalanceFlagSchema,
    }),
  );
  if (!flags.model) throw new UsageError('--model DIR (or EXPERTMESH_MODEL) is required');
  const sources = [flags.shards > 0, Boolean(flags['shard-addresses']), Boolean(flags.cluster || flags.registry)].filter(Boolean).length;
  if (sources > 1) throw new UsageError('give one of --shards, --shard-addresses, --cluster with --etcd, or --registry');
  if (Boolean(flags.cluster) !== Boolean(flags.etcd)) throw new UsageError('--cluster and --etcd go together');
  if (flags['rebalance-interval'] !== undefined && !flags.cluster && !flags.registry) throw new UsageError('--rebalance-interval changes the cluster plan: give --cluster with --etcd (or --registry)');
  if (flags['dispatch-deadline-min-ms'] > flags['dispatch-deadline-ms']) throw new UsageError('--dispatch-deadline-min-ms must not exceed --dispatch-deadline-ms');
  let registry;
  let tls;
  try {
    tls = await loadTls({ cert: flags['tls-cert'], key: flags['tls-key'], ca: flags['tls-ca'] });
    registry =
      openRegistry({
        etcd: flags.etcd || undefined,
        registry: flags.registry || undefined,
        cluster: flags.cluster || undefined,
        etcdSecurity: flags.etcd ? await etcdSecurityFromFlags(flags) : undefined,
        registryToken: env.EXPERTMESH_REGISTRY_TOKEN,
      }) ?? undefined;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // Shards this command starts get the router's certificates too, so the channel to them is the same mutual TLS.
  const shardTls = flags['tls-cert'] ? ['--tls-cert', flags['tls-cert'], '--tls-key', flags['tls-key'], '--tls-ca', flags['tls-ca']] : [];
  const formats = weightFormatsFromFlags(flags);
  const execution = executionFromFlags(flags, formats.experts);
  const cluster = flags.shards > 0 ? await LocalCluster.start({ modelDir: flags.model, shards: flags.shards, nRoutedExperts: (await loadModelConfig(flags.model)).nRoutedExperts, shardArgs: [...shardTls, '--weight-dtype', formats.experts, '--expert-kernel', flags['expert-kernel'], ...(flags['expert-transport'] === 'frames' ? ['--frames-listen', '127.0.0.1:0'] : [])] }) : null;
  const shardAddresses = cluster?.addresses ?? flags['shard-addresses']?.split(',');
  const beforeRouterMs = performance.now();
  let router: Router;
  try {
    router = await Router.start({
      modelDir: flags.model,
      host: flags.host,
      port: flags.port,
      ...(flags['served-model-name'] ? { servedModelName: flags['served-model-name'] } : {}),
      experts: shardAddresses ? { kind: 'shards', addresses: shardAddresses } : registry ? { kind: 'registry', registry } : { kind: 'in-process' },
      wireDtype: flags['wire-dtype'],
      expertTransport: flags['expert-transport'],
      combineDtype: flags['combine-dtype'],
      dispatchDeadline: { minMs: flags['dispatch-deadline-min-ms'], maxMs: flags['dispatch-deadline-ms'], p99Multiple: flags['dispatch-deadline-p99-multiple'] },
      dispatchHedge: { p99Multiple: flags['dispatch-hedge-p99-multiple'], minMs: flags['dispatch-hedge-min-ms'] },
      execution,
      weightFormats: formats,
      maxBatchSize: flags['max-batch-size'],
      maxBatchedTokens: flags['max-batched-tokens'],
      maxWaiting: flags['max-waiting'],
      kvCacheTokens: flags['kv-cache-tokens'],
      prefixCaching: !flags['no-prefix-caching'],
      kvAdmission: flags['kv-admission'],
      microBatches: flags['micro-batches'],
      ...(flags['max-model-len'] ? { maxModelLen: flags['max-model-len'] } : {}),
      defaultMaxTokens: flags['default-max-tokens'],
      reasoningParser: flags['reasoning-parser'],
      stepRetryMs: flags['step-retry-seconds'] * 1000,
      tls,
      // Keys from flags and from the environment both count (several keys may be live during a rotation).
      apiKeys: [...flags['api-key'], ...(env.EXPERTMESH_API_KEY ?? '').split(',').filter(Boolean)],
      ...(flags['public-endpoints'] ? { publicEndpoints: flags['public-endpoints'] } : {}),
      insecure: flags.insecure,
      ...(flags['max-prompt-bytes'] ? { maxPromptBytes: flags['max-prompt-bytes'] } : {}),
      ...rebalanceOptions(flags),
    });
  } catch (e) {
    await cluster?.stop();
    await registry?.close();
    if (e instanceof InsecureExposureError) throw new UsageError(e.message);
    throw e;
  }
  cluster?.keepRunning((m) => void process.stderr.write(`[serve] ${m}\n`));
  // Handlers first: a SIGTERM sent as soon as the listening line is read must drain, not kill.
  const shutdown = untilShutdownSignal();
  const startupMs = { process_and_imports: processAndImportsMs, flags_and_registry: Math.round(beforeRouterMs - processAndImportsMs), ...router.startupMs };
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: router.url, startup_ms: startupMs })}\n`);
  await shutdown;
  const unfinished = await router.drain(flags['drain-seconds'] * 1000);
  if (unfinished > 0) process.stderr.write(`[serve] ${unfinished} requests had not finished after --drain-seconds ${flags['drain-seconds']}: stopping them\n`);
  await withTimeout(router.stop(), 15_000, 'stopping the router').catch((e: Error) => void process.stderr.write(`[serve] ${e.message}\n`));
  await cluster?.stop();
  await withTimeout(registry?.close() ?? Promise.resolve(), 3000, 'closing the registry client').catch(() => undefined);
  return 0;
}
