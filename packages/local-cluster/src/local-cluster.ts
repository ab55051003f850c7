import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { evenSplitSpec } from '@expertmesh/expert-shard';

/** The shard entry point (the package's `./main` export), run under tsx in a process of its own. */
const SHARD_MAIN = createRequire(import.meta.url).resolve('@expertmesh/expert-shard/main');
/** tsx's loader by absolute URL: `--import tsx` would be resolved from the working directory, which may be any folder. */
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export interface LocalClusterOptions {
  readonly modelDir: string;
  readonly shards: number;
  readonly nRoutedExperts: number;
  readonly host?: string;
  /** Extra flags for every shard (e.g. --intra-op-threads 1). */
  readonly shardArgs?: readonly string[];
  readonly startTimeoutMs?: number;
  /** Extra environment for the shard processes (e.g. OTEL_* settings); they inherit this process's otherwise. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Register in this etcd cluster, or with this embedded registry server, and take experts from its
   * placement plan (slot shard-i) instead of an even split.
   */
  readonly registry?: { readonly cluster: string; readonly etcd: string } | { readonly url: string };
}

export interface LocalShard {
  readonly id: string;
  readonly address: string;
  readonly process: ChildProcess;
  readonly experts: string;
  /** The shard's Prometheus endpoint. */
  readonly metricsUrl: string;
}

export class ShardStartError extends Error {
  override readonly name = 'ShardStartError';
}

/**
 * N expert-shard processes on loopback with the experts split evenly, each on a free port.
 * stop() sends SIGTERM (the shards drain) and waits for them to exit.
 */
export class LocalCluster {
  private constructor(readonly shards: readonly LocalShard[]) {}

  get addresses(): string[] {
    return this.shards.map((s) => s.address);
  }

  static async start(options: LocalClusterOptions): Promise<LocalCluster> {
    const started = await Promise.allSettled(Array.from({ length: options.shards }, (_, i) => startShard(options, i)));
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await new LocalCluster(ok).stop();
      throw failed.reason;
    }
    return new LocalCluster(ok);
  }

  async stop(timeoutMs = 15_000): Promise<void> {
    await Promise.all(this.shards.map((s) => stopProcess(s.process, timeoutMs)));
  }
}

function startShard(options: LocalClusterOptions, index: number): Promise<LocalShard> {
  const id = `shard-${index}`;
  const experts = options.registry ? `plan slot ${id}` : evenSplitSpec(index, options.shards, options.nRoutedExperts);
  const r = options.registry;
  const placement = !r ? ['--experts', experts] : 'url' in r ? ['--registry', r.url, '--slot', id] : ['--cluster', r.cluster, '--etcd', r.etcd, '--slot', id];
  const args = ['--import', TSX_LOADER, SHARD_MAIN, '--model', options.modelDir, ...placement, '--listen', `${options.host ?? '127.0.0.1'}:0`, '--shard-id', id, ...(options.shardArgs ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new ShardStartError(`${id} did not start within ${options.startTimeoutMs ?? 120_000} ms: ${stderr.trim()}`));
    }, options.startTimeoutMs ?? 120_000);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      try {
        const msg = JSON.parse(line) as { event?: string; address?: string; metrics?: string };
        if (msg.event === 'listening' && msg.address) {
          clearTimeout(timer);
          resolve({ id, address: msg.address, process: child, experts, metricsUrl: msg.metrics ?? '' });
        }
      } catch {
        // Not a status line.
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new ShardStartError(`${id} exited (${signal ?? `code ${code}`}) before listening: ${stderr.trim()}`));
    });
  });
}

function stopProcess(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
