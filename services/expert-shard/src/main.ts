import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import type { ExecutionProvider } from '@expertmesh/tensor-ops';
import { parseExpertSpec } from './expert-spec.js';
import { loadShardCompute } from './load-shard.js';
import { ShardServer } from './shard-server.js';

export const shardUsage = `expertmesh shard --model DIR [--experts SPEC] [--listen HOST:PORT] [--shard-id ID]
    [--execution-provider cpu|cuda] [--intra-op-threads N]
  Serves routed experts over gRPC. SPEC: "all" (default), "0-15,32-47", or "0-15@3-10" (experts 0-15 of
  layers 3-10 only). Port 0 picks a free port. Prints {"event":"listening","address":…} when ready;
  SIGTERM or SIGINT drains in-flight calls and exits.`;

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
        experts: { type: 'string', default: 'all' },
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
  const selection = parseExpertSpec(values.experts!);
  const { host, port } = parseListen(values.listen!);
  const shardId = values['shard-id'] ?? `${hostname()}-${process.pid}`;

  const compute = await loadShardCompute(values.model, selection, { executionProvider: provider as ExecutionProvider, intraOpThreads: threads });
  const server = new ShardServer(compute, shardId);
  const address = await server.listen(host, port);
  process.stdout.write(`${JSON.stringify({ event: 'listening', address, shard_id: shardId, fingerprint: compute.fingerprint, weight_bytes: compute.experts.weightBytes })}\n`);

  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await server.shutdown();
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
