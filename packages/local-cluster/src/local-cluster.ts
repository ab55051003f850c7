import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { evenSplitSpec } from '@expertmesh/expert-shard';
import { RUNS_COMPILED, cliEntry, spawnTied, stopGroup } from '@expertmesh/process-lifecycle';

/**
 * How a shard process starts: compiled, the build's own CLI (`expertmesh.mjs shard …`, plain node); from the
 * sources, the shard's entry (the package's `./main` export) under tsx, whose loader goes by absolute URL
 * (`--import tsx` would be resolved from the working directory, which may be any folder).
 */
function shardCommand(): string[] {
  if (RUNS_COMPILED) return [cliEntry(), 'shard'];
  const require = createRequire(import.meta.url);
  return ['--import', pathToFileURL(require.resolve('tsx')).href, require.resolve('@expertmesh/expert-shard/main')];
}

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
 * N expert-shard processes on loopback with the experts split evenly (or by a plan), each on a free
 * port. The shards are tied to this process: each in a process group of its own, draining and exiting
 * when this process goes, however it goes. stop() sends SIGTERM (the shards drain) and waits.
 */
export class LocalCluster {
  private readonly current: LocalShard[];
  private stopping = false;
  private restarts: number[] = [];

  private constructor(
    shards: readonly LocalShard[],
    private readonly options: LocalClusterOptions,
  ) {
    this.current = [...shards];
  }

  get shards(): readonly LocalShard[] {
    return this.current;
  }

  get addresses(): string[] {
    return this.current.map((s) => s.address);
  }

  /** Starts the shards; an aborted `signal` stops the ones started so far and rejects. */
  static async start(options: LocalClusterOptions & { readonly signal?: AbortSignal }): Promise<LocalCluster> {
    const children: ChildProcess[] = [];
    const abort = (): void => {
      for (const c of children) void stopGroup(c, 2000);
    };
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      const started = await Promise.allSettled(Array.from({ length: options.shards }, (_, i) => startShard(options, i, null, (c) => children.push(c))));
      const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
      const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed || options.signal?.aborted) {
        await new LocalCluster(ok, options).stop();
        throw options.signal?.aborted ? new ShardStartError('shard start aborted: stopping') : failed!.reason;
      }
      return new LocalCluster(ok, options);
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
  }

  /**
   * Starts again, on the same address, any shard that exits while the cluster is not stopping (a
   * crash, a kill -9), at most `perMinute` times a minute; `log` hears of each.
   */
  keepRunning(log: (message: string) => void, perMinute = 5): void {
    const watch = (index: number): void => {
      const shard = this.current[index]!;
      shard.process.once('exit', (code, signal) => {
        if (this.stopping) return;
        const now = Date.now();
        this.restarts = this.restarts.filter((t) => now - t < 60_000);
        if (this.restarts.length >= perMinute) {
          log(`${shard.id} exited (${signal ?? `code ${code}`}); not restarted: ${perMinute} restarts in the last minute`);
          return;
        }
        this.restarts.push(now);
        log(`${shard.id} exited (${signal ?? `code ${code}`}): starting it again on ${shard.address}`);
        startShard(this.options, index, shard.address, () => undefined).then(
          (next) => {
            if (this.stopping) return void stopGroup(next.process, 2000);
            this.current[index] = next;
            log(`${shard.id} is back on ${next.address}`);
            watch(index);
          },
          (e: Error) => log(`${shard.id} did not start again: ${e.message}`),
        );
      });
    };
    this.current.forEach((_, i) => watch(i));
  }

  async stop(timeoutMs = 15_000): Promise<void> {
    this.stopping = true;
    await Promise.all(this.current.map((s) => stopGroup(s.process, timeoutMs)));
  }
}

function startShard(options: LocalClusterOptions, index: number, address: string | null, spawned: (child: ChildProcess) => void): Promise<LocalShard> {
  const id = `shard-${index}`;
  const experts = options.registry ? `plan slot ${id}` : evenSplitSpec(index, options.shards, options.nRoutedExperts);
  const r = options.registry;
  const placement = !r ? ['--experts', experts] : 'url' in r ? ['--registry', r.url, '--slot', id] : ['--cluster', r.cluster, '--etcd', r.etcd, '--slot', id];
  const listen = address ?? `${options.host ?? '127.0.0.1'}:0`;
  const args = [...shardCommand(), '--model', options.modelDir, ...placement, '--listen', listen, '--shard-id', id, ...(options.shardArgs ?? [])];
  const child = spawnTied(process.execPath, args, { node: true, env: { ...process.env, ...options.env } });
  spawned(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stopGroup(child, 0, 'SIGKILL');
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
