import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import type { ExecutionProvider } from '@expertmesh/tensor-ops';
import { openRegistry } from '@expertmesh/discovery';
import { serveMetrics, startTracing } from '@expertmesh/telemetry';
import { assignmentFromPlan, ClusterMembership } from './cluster-membership.js';
import { parseExpertSpec } from './expert-spec.js';
import { loadShardCompute } from './load-shard.js';
import { ShardServer } from './shard-server.js';
import { untilShutdownSignal } from '@expertmesh/process-lifecycle';

export const shardUsage = `expertmesh shard --model DIR [--experts SPEC] [--listen HOST:PORT] [--shard-id ID]
    [(--cluster NAME --etcd URL[,URL…] | --registry URL) [--slot NAME] [--advertise HOST:PORT] [--lease-ttl 10] [--lease-keepalive SECONDS]]
    [--metrics-listen HOST:PORT] [--execution-provider cpu|cuda] [--intra-op-threads N]
  Serves routed experts over gRPC. SPEC: "all" (the default without a cluster), "0-15,32-47", or "0-15@3-10" (experts 0-15 of layers 3-10
  only). With --cluster and --etcd (or --registry, the embedded registry of \`expertmesh up\`) the shard registers itself under a lease; without --experts it takes its
  experts from the cluster's placement plan (slot --slot, or the first free one) and follows plan changes.
  Port 0 picks a free port. Prints {"event":"listening","address":…} when ready; SIGTERM or SIGINT leaves the
  cluster, drains in-flight calls and exits.`;

export class ShardUsageError extends Error {
  override readonly name = 'ShardUsageError';
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new ShardUsageError(`--listen ${listen} is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:0)`);
  const port = Number(m[3]);
  if (port > 65535) throw new ShardUsageError(`--listen port ${port} is above 65535`);
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
        listen: { type: 'string', default: '127.0.0.1:50051' },
        'shard-id': { type: 'string' },
        'execution-provider': { type: 'string', default: process.env.EXPERTMESH_EXECUTION_PROVIDER ?? 'cpu' },
        'intra-op-threads': { type: 'string', default: '0' },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ShardUsageError((e as Error).message);
  }
  if (!values.model) throw new ShardUsageError('--model DIR is required');
  const provider = values['execution-provider'];
  if (provider !== 'cpu' && provider !== 'cuda') throw new ShardUsageError(`--execution-provider must be cpu or cuda, not ${provider}`);
  const threads = Number(values['intra-op-threads']);
  if (!Number.isInteger(threads) || threads < 0) throw new ShardUsageError('--intra-op-threads must be a whole number ≥ 0');
  if ((values.cluster === undefined) !== (values.etcd === undefined)) throw new ShardUsageError('--cluster and --etcd go together');
  if (values.etcd && values.registry) throw new ShardUsageError('give --etcd (with --cluster) or --registry, not both');
  const ttl = Number(values['lease-ttl']);
  if (!(ttl >= 1)) throw new ShardUsageError('--lease-ttl must be at least 1 second');
  const keepAlive = values['lease-keepalive'] === undefined ? undefined : Number(values['lease-keepalive']);
  if (keepAlive !== undefined && !(keepAlive > 0 && keepAlive < ttl)) throw new ShardUsageError('--lease-keepalive must be above 0 and below --lease-ttl');
  const { host, port } = parseListen(values.listen!);
  const shardId = values['shard-id'] ?? `${hostname()}-${process.pid}`;
  const execution = { executionProvider: provider as ExecutionProvider, intraOpThreads: threads };
  const registry = openRegistry({ etcd: values.etcd, registry: values.registry, cluster: values.cluster });
  // Without a registry and without --experts, hold everything (a single-shard deployment).
  const expertSpec = values.experts ?? (registry ? undefined : 'all');

  let slot = '';
  let planVersion = 0;
  const compute = await loadShardCompute(
    values.model,
    expertSpec
      ? parseExpertSpec(expertSpec)
      : async () => {
          const a = await assignmentFromPlan(registry!, values.slot, 120_000);
          slot = a.slot;
          planVersion = a.plan.version;
          return a.selection;
        },
    execution,
  );
  const tracing = startTracing('shard', shardId);
  const server = new ShardServer(compute, shardId);
  const address = await server.listen(host, port);
  const metricsAt = parseListen(values['metrics-listen'] ?? `${host}:0`);
  const metrics = await serveMetrics(server.registry, metricsAt.host, metricsAt.port);
  const membership = registry ? new ClusterMembership(registry, compute, { shardId, address: values.advertise ?? address, slot, planVersion }, slot ? { modelDir: values.model, execution } : null) : null;
  await membership?.join(ttl, keepAlive);
  process.stdout.write(`${JSON.stringify({ event: 'listening', address, metrics: metrics.url, shard_id: shardId, slot, fingerprint: compute.fingerprint, weight_bytes: compute.experts.weightBytes, tracing: tracing.enabled })}\n`);

  await untilShutdownSignal();
  await membership?.leave();
  await registry?.close();
  await server.shutdown();
  metrics.server.close();
  await tracing.shutdown();
  process.stdout.write(`${JSON.stringify({ event: 'stopped', shard_id: shardId })}\n`);
  return 0;
}

// Run directly (the local cluster launcher spawns this file): node --import tsx main.ts …
if (process.argv[1] && import.meta.filename === process.argv[1]) {
  runShard(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: Error) => {
      process.stderr.write(`expertmesh shard: ${e.name}: ${e.message}\n`);
      process.exit(e instanceof ShardUsageError ? 2 : 1);
    },
  );
}
