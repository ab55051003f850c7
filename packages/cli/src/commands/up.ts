import { rm, stat } from 'node:fs/promises';
import { z } from 'zod';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import {
  etcdSecurityFromFlags,
  EtcdProcess,
  EtcdRegistry,
  etcdInstalled,
  HttpRegistry,
  MemoryRegistry,
  planPlacement,
  planProblem,
  RegistryConflictError,
  RegistryServer,
  type ClusterRegistry,
  type PlacementPlan,
} from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { checkExposure, InsecureExposureError, makeLoopbackTlsBundle } from '@expertmesh/security';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { withTimeout } from '@expertmesh/process-lifecycle';
import { loadModelConfig } from '@expertmesh/model-config';
import { LocalCluster } from '@expertmesh/local-cluster';
import { checkpointState } from '@expertmesh/weights';
import { UsageError } from '../cli-error.js';
import { etcdFlagSchema, etcdFlagSpec, numberFlag, parseFlags } from '../flags.js';
import { RouterProcess } from '../router-process.js';

export const upUsage = `expertmesh up [--model models/demo] [--shards 4] [--redundant-experts R] [--port 8000] [--host 127.0.0.1] [--etcd URL [etcd security flags]] [--cluster local]
    [--embedded-registry] [--api-key KEY]… [--insecure] [--drain-seconds 30] [--expert-transport grpc|frames]
  Runs a whole local cluster: makes the demo checkpoint if the --model folder does not exist yet (it never writes
  into an existing folder), starts etcd (from the etcd binary) unless --etcd is given, stores a placement plan (or
  follows the one the cluster has), starts the shards and a router as separate processes, and serves the
  OpenAI-compatible API. Without etcd installed (or with --embedded-registry) this process serves an embedded
  registry with the same interface to the others. Secure by default: a throwaway CA gives every process a
  certificate (shards and router talk mutual TLS, the etcd it starts requires client certificates), the embedded
  registry asks for a token, and everything binds loopback; a non-loopback --host needs --api-key (or
  EXPERTMESH_API_KEY) unless --insecure. --redundant-experts R gives R extra expert copies per layer in the plan it
  stores (the number of experts holds every expert twice), so a shard can fail without a pause. A shard or router
  that crashes is started again. Ctrl-C (or SIGTERM, at any time, also while starting) stops all and removes etcd's
  data, after the router has drained (it answers the requests it accepted for up to --drain-seconds, then is
  stopped); a child that cannot start (a port in use) stops up with its error; if up is killed, its children exit too.
  --expert-transport frames: the shards also serve the expert call as frames without HTTP/2 (same mutual TLS) and
  the router uses them (see \`expertmesh serve --expert-transport\`).`;

/** How long stopping one part of the cluster (etcd, the shards…) may take before up moves on. */
const STOP_TIMEOUT_MS = 20_000;

/** `up` was asked to stop (a signal) before the cluster was ready. */
class StopRequested extends Error {
  override readonly name = 'StopRequested';
}

export async function up(argv: readonly string[]): Promise<number> {
  // Signals count from the first line: whatever has started by then is stopped, in order.
  const shutdown = new AbortController();
  const onSignal = (): void => shutdown.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await runCluster(argv, shutdown.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function runCluster(argv: readonly string[], signal: AbortSignal): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      model: { type: 'string' },
      shards: { type: 'string' },
      'redundant-experts': { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      etcd: { type: 'string' },
      cluster: { type: 'string' },
      'embedded-registry': { type: 'boolean' },
      'api-key': { type: 'string', multiple: true },
      insecure: { type: 'boolean' },
      'drain-seconds': { type: 'string' },
      'expert-transport': { type: 'string' },
      ...etcdFlagSpec,
    },
    z.object({
      model: z.string().default('models/demo'),
      shards: numberFlag((n) => n.int().positive()).default(4),
      'redundant-experts': numberFlag((n) => n.int().nonnegative()).default(0),
      port: numberFlag((n) => n.int().min(0).max(65535)).default(8000),
      host: z.string().default('127.0.0.1'),
      etcd: z.string().optional(),
      cluster: z.string().default('local'),
      'embedded-registry': z.boolean().default(false),
      'api-key': z.array(z.string().min(1)).default([]),
      insecure: z.boolean().default(false),
      'drain-seconds': numberFlag((n) => n.nonnegative()).default(30),
      'expert-transport': z.enum(['grpc', 'frames']).default('grpc'),
      ...etcdFlagSchema,
    }),
  );
  const log = (msg: string): void => void process.stderr.write(`[up] ${msg}\n`);
  const apiKeys = [...flags['api-key'], ...(process.env.EXPERTMESH_API_KEY ?? '').split(',').filter(Boolean)];
  try {
    checkExposure({ endpoint: 'HTTP API', host: flags.host, secured: apiKeys.length > 0, insecure: flags.insecure, howToSecure: 'give --api-key (or EXPERTMESH_API_KEY)' });
  } catch (e) {
    if (e instanceof InsecureExposureError) throw new UsageError(e.message);
    throw e;
  }
  /** What to stop at the end, in reverse order, each bounded (by `timeoutMs`, else STOP_TIMEOUT_MS). */
  const stops: { what: string; stop: () => Promise<void>; timeoutMs?: number }[] = [];
  const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new StopRequested('stop requested')), { once: true }));
  aborted.catch(() => undefined);
  /** A start-up step, cut short by a signal. */
  const step = <T>(p: Promise<T>): Promise<T> => (signal.aborted ? Promise.reject(new StopRequested('stop requested')) : Promise.race([p, aborted]));
  try {
    await ensureModel(flags.model, log, step, stops);
    const config = await loadModelConfig(flags.model);
    const slots = Array.from({ length: flags.shards }, (_, i) => `shard-${i}`);
    // A throwaway CA: every process of this cluster gets a loopback certificate from it.
    const tls = await step(makeLoopbackTlsBundle(['router', 'etcd', 'up', 'shard']));
    stops.push({ what: 'the throwaway certificates', stop: () => rm(tls.dir, { recursive: true, force: true }) });
    const tlsArgs = (name: string): string[] => {
      const f = tls.files.get(name)!;
      return ['--tls-cert', f.cert, '--tls-key', f.key, '--tls-ca', f.ca];
    };
    const useEtcd = !flags['embedded-registry'] && (Boolean(flags.etcd) || etcdInstalled());
    // The etcd up starts serves TLS and requires client certificates of the throwaway CA.
    const ownEtcd = useEtcd && !flags.etcd ? { server: tls.files.get('etcd')!, probe: tls.files.get('up')! } : null;
    const etcdSecurityArgs = ownEtcd
      ? ['--etcd-ca', ownEtcd.probe.ca, '--etcd-cert', ownEtcd.probe.cert, '--etcd-key', ownEtcd.probe.key]
      : (['etcd-ca', 'etcd-cert', 'etcd-key', 'etcd-user', 'etcd-password-file'] as const).flatMap((f) => (flags[f] ? [`--${f}`, flags[f]!] : []));
    const etcd = ownEtcd ? await EtcdProcess.start({ tls: ownEtcd, signal }) : null;
    if (etcd) stops.push({ what: 'etcd', stop: () => etcd.stop() });
    const etcdUrl = useEtcd ? (flags.etcd ?? etcd!.url) : null;
    const embedded = useEtcd ? null : await step(RegistryServer.start(new MemoryRegistry()));
    if (embedded) stops.push({ what: 'the embedded registry', stop: () => embedded.close() });
    // Secrets reach the children through their environment, never their command line (visible to every user in ps).
    const secretEnv: Record<string, string> = {
      ...(embedded ? { EXPERTMESH_REGISTRY_TOKEN: embedded.token } : {}),
      ...(apiKeys.length ? { EXPERTMESH_API_KEY: apiKeys.join(',') } : {}),
    };
    const registry: ClusterRegistry = etcdUrl
      ? new EtcdRegistry([etcdUrl], flags.cluster, ownEtcd ? await etcdSecurityFromFlags({ 'etcd-ca': ownEtcd.probe.ca, 'etcd-cert': ownEtcd.probe.cert, 'etcd-key': ownEtcd.probe.key }) : await etcdSecurityFromFlags(flags))
      : new HttpRegistry(embedded!.url, embedded!.token);
    log(etcdUrl ? `registry: etcd at ${etcdUrl}, cluster "${flags.cluster}"` : `registry: embedded, served at ${embedded!.url}`);
    let storedPlan = false;
    try {
      const { fingerprint } = await step(readCheckpointIdentity(flags.model));
      storedPlan = await step(storeOrFollowPlan(registry, config, fingerprint, slots, flags['redundant-experts'], log));
    } finally {
      await withTimeout(registry.close(), 3000, 'closing the registry client').catch(() => undefined);
    }
    // Each process keeps its own service.name when the user names the service.
    const serviceName = process.env.OTEL_SERVICE_NAME;
    const roleEnv = (role: string): Record<string, string> => (serviceName ? { OTEL_SERVICE_NAME: `${serviceName}-${role}` } : {});
    const frames = flags['expert-transport'] === 'frames';
    const cluster = await LocalCluster.start({
      env: { ...roleEnv('shard'), ...secretEnv },
      modelDir: flags.model,
      shards: flags.shards,
      nRoutedExperts: config.nRoutedExperts,
      registry: etcdUrl ? { cluster: flags.cluster, etcd: etcdUrl } : { url: embedded!.url },
      // One certificate for the shards, valid for the loopback addresses they register.
      // up stops its shards together: they leave the plan as it is (it may not be up's to change).
      // In a cluster up has just planned, no shard serves yet and up starts its router only once every shard has
      // loaded: a joining shard's rests (--join-load-rest, there to leave the CPU to serving shards) would only delay
      // the start. Following a cluster's plan, its shards may serve beside them: they rest as usual.
      shardArgs: [...tlsArgs('shard'), ...(etcdUrl ? etcdSecurityArgs : []), '--no-handoff', ...(frames ? ['--frames-listen', '127.0.0.1:0'] : []), ...(storedPlan ? ['--join-load-rest', '0'] : [])],
      signal,
    });
    stops.push({ what: 'the shards', stop: () => cluster.stop() });
    cluster.keepRunning(log);
    log(`${flags.shards} shards: ${cluster.addresses.join(', ')}`);
    const router = new RouterProcess(
      (port) => [
        'serve',
        '--model',
        flags.model,
        '--host',
        flags.host,
        '--port',
        String(port ?? flags.port),
        ...tlsArgs('router'),
        ...(flags.insecure ? ['--insecure'] : []),
        ...(frames ? ['--expert-transport', 'frames'] : []),
        ...(etcdUrl ? ['--cluster', flags.cluster, '--etcd', etcdUrl, ...etcdSecurityArgs] : ['--registry', embedded!.url]),
      ],
      { ...process.env, ...roleEnv('router'), ...secretEnv },
      flags['drain-seconds'],
    );
    // The router drains first; the shards it calls are stopped only after it has.
    stops.push({ what: 'the router', stop: () => router.stop(), timeoutMs: router.stopGraceMs + 5000 });
    const url = await step(router.start());
    // Wait until every expert has a live holder.
    for (let i = 0; i < 600 && !(await isReady(url)); i++) await step(new Promise((r) => setTimeout(r, 100)));
    process.stdout.write(`${JSON.stringify({ event: 'ready', url, shards: cluster.addresses, shard_metrics: cluster.shards.map((s) => s.metricsUrl), etcd: etcdUrl, registry: embedded?.url ?? null, tls: tls.dir })}\n`);
    log(`serving the OpenAI API at ${url}/v1 (model "${flags.model.split('/').filter(Boolean).at(-1)}"); Ctrl-C stops everything`);
    await router.keepRunning(signal, log);
    log('stopping');
    return 0;
  } catch (e) {
    if (!(e instanceof StopRequested) && !signal.aborted) throw e;
    log('stopped before the cluster was ready');
    return 0;
  } finally {
    for (const { what, stop, timeoutMs } of stops.reverse()) await withTimeout(stop(), timeoutMs ?? STOP_TIMEOUT_MS, `stopping ${what}`).catch((e: Error) => log(e.message));
  }
}

async function isReady(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/ready`, { signal: AbortSignal.timeout(2000) })).status === 200;
  } catch {
    return false;
  }
}

/**
 * The model folder up serves: made (as the demo checkpoint) only when the path does not exist yet;
 * an existing folder must already hold a complete checkpoint, because up never writes into a folder
 * it did not create.
 */
async function ensureModel(dir: string, log: (msg: string) => void, step: <T>(p: Promise<T>) => Promise<T>, stops: { what: string; stop: () => Promise<void> }[]): Promise<void> {
  const exists = await stat(dir).then(
    () => true,
    () => false,
  );
  if (!exists) {
    log(`making the demo checkpoint in ${dir}`);
    let made = false;
    const making = makeCheckpoint({ preset: 'demo', outDir: dir, seed: 0 });
    // Stopped while writing: the half-written folder (ours: the path did not exist) goes, once nothing writes to it.
    stops.push({
      what: 'the unfinished checkpoint',
      stop: async () => {
        await making.catch(() => undefined);
        if (!made) await rm(dir, { recursive: true, force: true });
      },
    });
    await step(making);
    made = true;
    return;
  }
  const state = await checkpointState(dir);
  if (state.kind === 'none') throw new UsageError(`${dir} exists but holds no checkpoint (no config.json or safetensors): up only writes the demo checkpoint into a path that does not exist yet; point --model at a checkpoint folder or a new path`);
  if (state.kind === 'incomplete') throw new UsageError(`${dir} holds an incomplete checkpoint (${state.reason}): remove it, or rewrite it with \`expertmesh init-model --preset demo --out ${dir} --force\``);
}

/**
 * Stores the plan for `slots` unless the cluster already has one: a cluster's plan is followed, never
 * replaced by up (it is created only if absent, in one transaction). A stored plan for another model
 * or other slots stops up with the reason. True when up stored the plan (a new cluster).
 */
async function storeOrFollowPlan(registry: ClusterRegistry, config: ModelConfig, fingerprint: string, slots: readonly string[], redundantExperts: number, log: (msg: string) => void): Promise<boolean> {
  const fresh = (version: number): PlacementPlan => planPlacement({ config, modelFingerprint: fingerprint, version, slots, redundantExperts, bytesPerExpert: 3 * config.hiddenSize * config.moeIntermediateSize * 4 });
  const stored = await registry.getPlan();
  if (!stored) {
    try {
      await registry.putPlan(fresh(1), { replaces: null });
      return true;
    } catch (e) {
      if (!(e instanceof RegistryConflictError)) throw e;
      // Another writer stored one meanwhile: follow it, as below.
    }
  }
  const plan = stored ?? (await registry.getPlan())!;
  const problem = planProblem(plan, config, fingerprint);
  const sameSlots = Object.keys(plan.shards).sort().join() === [...slots].sort().join();
  if (problem || !sameSlots) {
    throw new UsageError(
      `the cluster already has plan v${plan.version} ${problem ? `that this model cannot follow (${problem})` : `with slots ${Object.keys(plan.shards).join(', ')}, not ${slots.join(', ')}`}: up does not replace a cluster's plan; use another --cluster, or re-plan it with \`expertmesh plan --store\``,
    );
  }
  log(`following the cluster's plan v${plan.version}`);
  return false;
}
