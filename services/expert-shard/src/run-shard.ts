// `expertmesh shard`. Run from the sources, main.ts loads this module only after a joining shard has lowered its
// autogroup (joining-start.ts); the CLI's entries do the same before they load the CLI.
import { restoreJoiningAutogroup } from './joining-start.js';
import { lowerForExit } from './leaving-priority.js';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { heapReturnEnabled, resolveExpertKernel, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import { INTRA_OP_SPIN, releaseLoadBuffers, type ExecutionProvider, type IntraOpSpin } from '@expertmesh/tensor-ops';
import { etcdSecurityFromFlags, openRegistry, REGISTRY_SECURITY_USAGE } from '@expertmesh/discovery';
import { checkExposure, hostOf, hostPort, loadTls, portOf } from '@expertmesh/security';
import { serveMetrics, ShardMetrics, startTracing } from '@expertmesh/telemetry';
import { WEIGHT_DTYPES, type WeightDtype } from '@expertmesh/model-weights';
import { ClusterMembership } from './cluster-membership.js';
import { parseExpertSpec } from './expert-spec.js';
import { DEFAULT_LOAD_NICE, loadShardCompute } from './load-shard.js';
import { DEFAULT_MAX_TOKENS_PER_CALL } from '@expertmesh/wire';
import { DEFAULT_MAX_IN_FLIGHT_PER_STREAM, ShardServer } from './shard-server.js';
import { CheckpointLayouts, requireModelDir } from '@expertmesh/weights';
import { staleHolderProbe } from './holder-probe.js';
import { exitWithParent, untilShutdownSignal, withTimeout } from '@expertmesh/process-lifecycle';

export const shardUsage = `expertmesh shard --model DIR [--experts SPEC] [--listen HOST:PORT] [--frames-listen HOST:PORT|off] [--shard-id ID]
    [(--cluster NAME --etcd URL[,URL…] ${REGISTRY_SECURITY_USAGE} | --registry URL) [--slot NAME] [--advertise HOST:PORT] [--lease-ttl 10] [--lease-keepalive SECONDS]]
    [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--insecure] [--max-tokens-per-call ${DEFAULT_MAX_TOKENS_PER_CALL}] [--max-in-flight-per-stream ${DEFAULT_MAX_IN_FLIGHT_PER_STREAM}]
    [--metrics-listen HOST:PORT] [--health-listen HOST:PORT] [--execution-provider cpu|cuda] [--intra-op-threads N] [--intra-op-spin run|off] [--expert-kernel auto|onnxruntime|native] [--weight-dtype auto|float32|int8|int4]
    [--handoff-timeout 120] [--retire-grace 5] [--load-rest 3] [--join-load-rest 12] [--handoff | --no-handoff] [--expert-worker on|off]
  Serves routed experts over gRPC. SPEC: "all" (the default without a cluster), "0-15,32-47", or "0-15@3-10" (experts 0-15 of layers 3-10
  only). With --cluster and --etcd (or --registry, the embedded registry of \`expertmesh up\`) the shard registers itself under a lease; without --experts it takes its
  experts from the cluster's placement plan and follows plan changes: it claims slot --slot, or the first free one, atomically
  (an etcd transaction under its lease); with every slot taken (or a --slot the plan lacks) it joins as a new slot and
  stores a re-plan that gives it work. A new plan is applied with no pause: new experts load while the old serve, and
  an old one is given up only once another shard holds it (kept --retire-grace seconds more for requests in flight;
  at most --handoff-timeout seconds of waiting, then it keeps serving it). While it serves, the load rests --load-rest
  times as long as each expert graph took to build (0: as fast as it can); before it has answered any call (joining) it
  rests --join-load-rest times as long instead; shards on one host load one at a time, so a switch takes little CPU from serving. SIGTERM first hands this slot's experts to
  the other shards through a plan change when it took its slot by itself (no --slot: an elastic member) or with
  --handoff; a --slot shard (a StatefulSet pod, a systemd unit: it comes back in that slot) keeps its slot in the plan
  unless --handoff, and --no-handoff never hands over. Shards all stopping together leave the plan as it is.
  --tls-* serve mutual TLS: routers must present a certificate of --tls-ca. A non-loopback --listen without TLS refuses
  to start unless --insecure. The embedded registry's token comes from EXPERTMESH_REGISTRY_TOKEN.
  --frames-listen also serves the expert-compute call as length-prefixed frames without HTTP/2 (the hot path routers use
  with --expert-transport frames), with the same TLS and the same plaintext rules as --listen; it is advertised in the
  shard's record (on --advertise's host when given). Off by default.
  --expert-worker on holds and runs the experts in worker threads: a new plan's experts are built in a new worker at the
  lowest CPU priority while the current one serves, so the thread that answers routers never builds a graph (~0.2 ms
  more per call; the experts a switch keeps are held twice until the old set is released); if a worker thread dies the shard exits (code 1) and its lease lapses. off (the default): experts
  run on the serving thread, and a switch reuses the graphs of the experts it keeps.
  --health-listen also serves the gRPC health service (only it) in plaintext, for probes that cannot present a
  client certificate (kubelet's gRPC probe). Port 0 picks a free port. Prints {"event":"listening","address":…} when ready; SIGTERM or SIGINT leaves the
  cluster, drains in-flight calls and exits.`;

/**
 * What a shard that joins by the plan does last before its record names its experts (the record routers start
 * calling it from), still at its lowered autogroup: it collects its garbage in full (as after a start-up load, two
 * collections), then puts its autogroup back. Otherwise its start-up's and its load's garbage fills its young
 * generation, and its first collections after it announces (5–21 ms minor ones, 0–110 ms after its record, in 6 of 7
 * traced runs) run at full weight on the core the serving shards share, as routers start calling it
 * (docs/benchmarks.md, issue 16, session 30).
 */
async function beforeJoiningAnnounce(): Promise<void> {
  await releaseLoadBuffers();
  await restoreJoiningAutogroup();
}

/** How long shutdown waits on the registry (and the trace exporter) at most. */
const LEAVE_BOUND_MS = 3000;

export class ShardUsageError extends Error {
  override readonly name = 'ShardUsageError';
}

function parseListen(listen: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new ShardUsageError(`${flag} ${listen} is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:0)`);
  const port = Number(m[3]);
  if (port > 65535) throw new ShardUsageError(`${flag} port ${port} is above 65535`);
  return { host: m[1] ?? m[2]!, port };
}

/** `expertmesh shard …`: runs until a signal, then drains. Resolves with the exit code. */
export async function runShard(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        model: { type: 'string' },
        experts: { type: 'string' },
        cluster: { type: 'string', default: process.env.EXPERTMESH_CLUSTER },
        etcd: { type: 'string', default: process.env.EXPERTMESH_ETCD },
        registry: { type: 'string', default: process.env.EXPERTMESH_REGISTRY },
        slot: { type: 'string' },
        advertise: { type: 'string' },
        'lease-ttl': { type: 'string', default: '10' },
        'lease-keepalive': { type: 'string' },
        'metrics-listen': { type: 'string' },
        'health-listen': { type: 'string' },
        listen: { type: 'string', default: '127.0.0.1:50051' },
        'frames-listen': { type: 'string', default: process.env.EXPERTMESH_FRAMES_LISTEN ?? 'off' },
        'shard-id': { type: 'string' },
        'execution-provider': { type: 'string', default: process.env.EXPERTMESH_EXECUTION_PROVIDER ?? 'cpu' },
        'intra-op-threads': { type: 'string', default: '0' },
        'intra-op-spin': { type: 'string', default: process.env.EXPERTMESH_INTRA_OP_SPIN ?? 'run' },
        'expert-kernel': { type: 'string', default: process.env.EXPERTMESH_EXPERT_KERNEL ?? 'auto' },
        'tls-cert': { type: 'string', default: process.env.EXPERTMESH_TLS_CERT },
        'tls-key': { type: 'string', default: process.env.EXPERTMESH_TLS_KEY },
        'tls-ca': { type: 'string', default: process.env.EXPERTMESH_TLS_CA },
        insecure: { type: 'boolean', default: false },
        'max-tokens-per-call': { type: 'string', default: String(DEFAULT_MAX_TOKENS_PER_CALL) },
        'max-in-flight-per-stream': { type: 'string', default: String(DEFAULT_MAX_IN_FLIGHT_PER_STREAM) },
        'etcd-ca': { type: 'string' },
        'etcd-cert': { type: 'string' },
        'etcd-key': { type: 'string' },
        'etcd-user': { type: 'string' },
        'etcd-password-file': { type: 'string' },
        'weight-dtype': { type: 'string', default: process.env.EXPERTMESH_WEIGHT_DTYPE ?? 'auto' },
        'handoff-timeout': { type: 'string', default: '120' },
        'retire-grace': { type: 'string', default: '5' },
        'load-rest': { type: 'string', default: '3' },
        'join-load-rest': { type: 'string', default: '12' },
        handoff: { type: 'boolean', default: false },
        'no-handoff': { type: 'boolean', default: false },
        'expert-worker': { type: 'string', default: process.env.EXPERTMESH_EXPERT_WORKER ?? 'off' },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ShardUsageError((e as Error).message);
  }
  if (!values.model) throw new ShardUsageError('--model DIR is required');
  const provider = values['execution-provider'];
  if (provider !== 'cpu' && provider !== 'cuda') throw new ShardUsageError(`--execution-provider must be cpu or cuda, not ${provider}`);
  const weightDtype = values['weight-dtype'];
  if (!(WEIGHT_DTYPES as readonly string[]).includes(weightDtype!)) throw new ShardUsageError(`--weight-dtype must be ${WEIGHT_DTYPES.join(' or ')}, not ${weightDtype}`);
  const threads = Number(values['intra-op-threads']);
  if (!Number.isInteger(threads) || threads < 0) throw new ShardUsageError('--intra-op-threads must be a whole number ≥ 0');
  const spin = values['intra-op-spin'];
  if (!(INTRA_OP_SPIN as readonly string[]).includes(spin!)) throw new ShardUsageError(`--intra-op-spin must be run or off, not ${spin}`);
  let expertKernel: ResolvedExpertKernel;
  try {
    expertKernel = resolveExpertKernel(values['expert-kernel'], weightDtype!);
  } catch (e) {
    throw new ShardUsageError((e as Error).message);
  }
  if ((values.cluster === undefined) !== (values.etcd === undefined)) throw new ShardUsageError('--cluster and --etcd go together');
  if (values.etcd && values.registry) throw new ShardUsageError('give --etcd (with --cluster) or --registry, not both');
  const ttl = Number(values['lease-ttl']);
  if (!(ttl >= 1)) throw new ShardUsageError('--lease-ttl must be at least 1 second');
  const keepAlive = values['lease-keepalive'] === undefined ? undefined : Number(values['lease-keepalive']);
  if (keepAlive !== undefined && !(keepAlive > 0 && keepAlive < ttl)) throw new ShardUsageError('--lease-keepalive must be above 0 and below --lease-ttl');
  if (values.handoff && values['no-handoff']) throw new ShardUsageError('give --handoff or --no-handoff, not both');
  const handoffTimeout = Number(values['handoff-timeout']);
  if (!(handoffTimeout >= 0)) throw new ShardUsageError('--handoff-timeout must be a number of seconds ≥ 0');
  const retireGrace = Number(values['retire-grace']);
  if (!(retireGrace >= 0)) throw new ShardUsageError('--retire-grace must be a number of seconds ≥ 0');
  const loadRest = Number(values['load-rest']);
  if (!(loadRest >= 0 && loadRest <= 100)) throw new ShardUsageError('--load-rest must be a number from 0 to 100 (rest per unit of load time while serving)');
  try {
    heapReturnEnabled(); // EXPERTMESH_HEAP_RETURN, checked at start-up rather than at the first heap return
  } catch (e) {
    throw new ShardUsageError((e as Error).message);
  }
  const joinLoadRest = Number(values['join-load-rest']);
  if (!(joinLoadRest >= 0 && joinLoadRest <= 100)) throw new ShardUsageError('--join-load-rest must be a number from 0 to 100 (rest per unit of load time before the first call answered)');
  const expertWorker = values['expert-worker'];
  if (expertWorker !== 'on' && expertWorker !== 'off') throw new ShardUsageError(`--expert-worker must be on or off, not ${expertWorker}`);
  const maxTokensPerCall = Number(values['max-tokens-per-call']);
  if (!Number.isInteger(maxTokensPerCall) || maxTokensPerCall < 1) throw new ShardUsageError('--max-tokens-per-call must be a whole number ≥ 1');
  const maxInFlight = Number(values['max-in-flight-per-stream']);
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1) throw new ShardUsageError('--max-in-flight-per-stream must be a whole number ≥ 1');
  const { host, port } = parseListen(values.listen!);
  const framesAt = values['frames-listen'] === 'off' ? null : parseListen(values['frames-listen']!, '--frames-listen');
  const shardId = values['shard-id'] ?? `${hostname()}-${process.pid}`;
  const execution = { executionProvider: provider as ExecutionProvider, intraOpThreads: threads, intraOpSpin: spin as IntraOpSpin, expertKernel };
  // Everything a mistake in the security set-up can break is checked before the model loads.
  const tls = await loadTls({ cert: values['tls-cert'], key: values['tls-key'], ca: values['tls-ca'] }).catch((e: Error) => {
    throw new ShardUsageError(e.message);
  });
  try {
    checkExposure({ endpoint: 'expert shard (gRPC)', host, secured: tls !== null, insecure: values.insecure!, howToSecure: 'give --tls-cert, --tls-key and --tls-ca' });
    if (framesAt) checkExposure({ endpoint: 'expert shard (frames)', host: framesAt.host, secured: tls !== null, insecure: values.insecure!, howToSecure: 'give --tls-cert, --tls-key and --tls-ca' });
  } catch (e) {
    throw new ShardUsageError((e as Error).message);
  }
  await requireModelDir(values.model);
  const load = { execution, weightDtype: weightDtype as WeightDtype, inWorkers: expertWorker === 'on', loadNice: DEFAULT_LOAD_NICE, checkpointLayouts: new CheckpointLayouts() };
  const registry = openRegistry({
    etcd: values.etcd,
    registry: values.registry,
    cluster: values.cluster,
    etcdSecurity: values.etcd ? await etcdSecurityFromFlags(values) : undefined,
    registryToken: process.env.EXPERTMESH_REGISTRY_TOKEN,
  });
  // Without a registry and without --experts, hold everything (a single-shard deployment).
  const expertSpec = values.experts ?? (registry ? undefined : 'all');

  const metricsRegistry = new ShardMetrics();
  const onPlanRejected = (problem: string): void => {
    metricsRegistry.registryRejected.inc({ kind: 'plan' });
    process.stderr.write(`expertmesh shard: ignoring the stored plan: ${problem}\n`);
  };
  // Following the plan, the shard starts with no experts: it claims a slot first, then loads that slot's.
  const compute = await loadShardCompute(values.model, expertSpec ? parseExpertSpec(expertSpec) : { experts: new Set(), layers: null }, load, maxTokensPerCall);
  // A dead expert worker cannot be replaced under the calls routed to it: the shard goes down (its calls
  // fail UNAVAILABLE, routers take them elsewhere) rather than hang; its lease lapses, a supervisor restarts it.
  compute.onWorkerCrash((e) => {
    process.stderr.write(`expertmesh shard: ${e.message}\n`);
    process.exit(1);
  });
  const tracing = startTracing('shard', shardId);
  const server = new ShardServer(compute, shardId, metricsRegistry, { tls, maxInFlightPerStream: maxInFlight });
  // A shard following the plan listens before it loads (its record needs the address), but is not healthy until it serves its slot.
  const address = await server.listen(host, port, { serving: Boolean(expertSpec) || !registry });
  const framesAddress = framesAt ? await server.listenFrames(framesAt.host, framesAt.port) : null;
  // Routers dial the frames port on the host they reach the shard at (--advertise's when given).
  const framesAdvertised = framesAddress ? hostPort(hostOf(values.advertise ?? address), Number(portOf(framesAddress))) : undefined;
  const healthAt = values['health-listen'] === undefined ? null : parseListen(values['health-listen']);
  const healthAddress = healthAt ? await server.listenHealth(healthAt.host, healthAt.port) : null;
  const metricsAt = parseListen(values['metrics-listen'] ?? `${host}:0`);
  const metrics = await serveMetrics(server.registry, metricsAt.host, metricsAt.port);
  const membership = registry
    ? new ClusterMembership(registry, compute, { shardId, address: values.advertise ?? address, ...(framesAdvertised ? { framesAddress: framesAdvertised } : {}) }, expertSpec ? null : { modelDir: values.model, load, warmCallPath: () => server.warmUp(), beforeAnnounce: beforeJoiningAnnounce }, onPlanRejected, {
        retireGraceMs: retireGrace * 1000,
        handoffTimeoutMs: handoffTimeout * 1000,
        loadRestFactor: loadRest,
        joinLoadRestFactor: joinLoadRest,
        handOverOnLeave: values.handoff! || (!values['no-handoff'] && values.slot === undefined),
      })
    : null;
  const isStale = staleHolderProbe(values.advertise ?? address, tls);
  // From the moment its record may exist, SIGTERM/SIGINT means leave in order (hand over, drain), never the
  // default action's instant death: the steps below (warm-up, autogroup restore, join) can take a while.
  const shutdown = untilShutdownSignal();
  // A shard given its experts serves them from its first call: its call path's cold code runs before (ShardServer.warmUp).
  if (expertSpec) await server.warmUp();
  if (expertSpec) await restoreJoiningAutogroup(); // before its record names its experts (or it serves without a registry)
  if (expertSpec) await membership?.join(ttl, keepAlive, isStale);
  else await membership?.joinPlan(ttl, keepAlive, isStale, values.slot, 120_000);
  await restoreJoiningAutogroup(); // already back once its record named experts; this covers a plan that gave it none
  server.startServing();
  process.stdout.write(`${JSON.stringify({ event: 'listening', address, frames: framesAddress, metrics: metrics.url, health: healthAddress, shard_id: shardId, slot: membership?.slot ?? '', fingerprint: compute.fingerprint, weight_bytes: compute.experts.weightBytes, weight_format: compute.experts.weightFormat, tracing: tracing.enabled })}\n`);

  await shutdown;
  // No idle memory return from here on: the exit gives everything back, and a return (a full V8 collection and
  // malloc_trim, 80–95 ms of CPU for a demo shard) would come ~1 s after the routers stop calling, in the
  // hand-over's grace, at full priority on a core the serving shards share (docs/benchmarks.md, issue 16, round 16).
  server.heapReturn.stop();
  // Hand over and leave the cluster first (routers stop sending here), but never wait long on a
  // registry that is gone: the lease runs out by itself.
  await membership?.handOver();
  // Past its hand-over no router sends it calls: its teardown yields the core to the shards that serve.
  lowerForExit();
  await withTimeout(membership?.leave() ?? Promise.resolve(), LEAVE_BOUND_MS, 'leaving the cluster registry').catch((e: Error) => void process.stderr.write(`${e.message}: the lease will expire by itself\n`));
  await withTimeout(registry?.close() ?? Promise.resolve(), LEAVE_BOUND_MS, 'closing the registry client').catch(() => undefined);
  await server.shutdown();
  metrics.server.close();
  await withTimeout(tracing.shutdown(), LEAVE_BOUND_MS, 'flushing traces').catch(() => undefined);
  process.stdout.write(`${JSON.stringify({ event: 'stopped', shard_id: shardId })}\n`);
  return 0;
}

/** main.ts run as a program: runs the shard and exits with its code (2 for a usage error). */
export function runShardProgram(argv: readonly string[]): void {
  exitWithParent();
  runShard(argv).then(
    (code) => process.exit(code),
    (e: Error) => {
      process.stderr.write(`expertmesh shard: ${e.name}: ${e.message}\n`);
      process.exit(e instanceof ShardUsageError ? 2 : 1);
    },
  );
}
