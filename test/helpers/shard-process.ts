import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { withServingNodeFlags } from '@expertmesh/process-lifecycle';
import { spawnTiedToTest } from './tied-to-test.js';

export const SHARD_MAIN = join(import.meta.dirname, '..', '..', 'services', 'expert-shard', 'src', 'main.ts');

/** An `expertmesh shard` process in a process group of its own. */
export interface ShardProcess {
  readonly address: string;
  /** Its frames endpoint (--frames-listen), null when it serves gRPC only. */
  readonly frames: string | null;
  /** Its Prometheus endpoint's URL (…/metrics), null when its listening line names none. */
  readonly metrics: string | null;
  readonly process: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
  /** Sends a signal to the shard's process group (SIGKILL, SIGSTOP, SIGCONT, SIGTERM…). */
  signal(signal: NodeJS.Signals): void;
  /** kill -9 of the group, then waits for the exit (also for a stopped process). */
  kill(): Promise<void>;
  /** The same as kill(). */
  stop(): Promise<void>;
  /** The last 4000 characters the shard wrote to stderr (its log). */
  stderr(): string;
}

export interface ShardProcessOptions {
  /** Extra environment (the shard inherits this process's otherwise). */
  readonly env?: Readonly<Record<string, string>>;
  /** Run inside this network namespace (`ip netns exec`, which becomes the shard itself). */
  readonly netns?: string;
  readonly timeoutMs?: number;
  /** Called with the process id as soon as it is spawned (before it listens). */
  readonly onSpawned?: (pid: number) => void;
  /** Node/V8 flags before the entry point (e.g. --no-memory-reducer, which NODE_OPTIONS refuses). */
  readonly nodeArgs?: readonly string[];
}

/** Starts a shard (`args` after the entry point, e.g. --model, --experts) and waits until it listens; rejects with its stderr if it exits first. */
export async function startShardProcess(args: readonly string[], options: ShardProcessOptions = {}): Promise<ShardProcess> {
  // The product's Node flags (what the expertmesh executable starts shards with) unless nodeArgs say otherwise.
  const node = [process.execPath, ...withServingNodeFlags([...(options.nodeArgs ?? []), '--import', 'tsx', SHARD_MAIN, '--intra-op-threads', '1', ...args])];
  const [command, ...argv] = options.netns ? ['ip', 'netns', 'exec', options.netns, ...node] : node;
  const child = spawnTiedToTest(command!, argv, { detached: true, env: { ...process.env, ...options.env } });
  if (child.pid !== undefined) options.onSpawned?.(child.pid);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, s);
    } catch {
      // Already gone.
    }
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) signal('SIGKILL');
    await exited;
  };
  try {
    let frames: string | null = null;
    let metrics: string | null = null;
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`shard did not start within ${options.timeoutMs ?? 120_000} ms: ${stderr}`)), options.timeoutMs ?? 120_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        try {
          const m = JSON.parse(line) as { event?: string; address?: string; frames?: string | null; metrics?: string };
          if (m.event === 'listening' && m.address) {
            frames = m.frames ?? null;
            metrics = m.metrics ?? null;
            clearTimeout(timer);
            resolve(m.address);
          }
        } catch {
          // Not a status line.
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`shard exited (${child.exitCode ?? child.signalCode}) before listening: ${stderr}`));
      });
    });
    return { address, frames, metrics, process: child, pid: child.pid!, exited, signal, kill, stop: kill, stderr: () => stderr };
  } catch (e) {
    signal('SIGKILL');
    throw e;
  }
}

/** Runs a shard that is expected to refuse to start: its exit code and stderr. */
export function runShardToExit(args: readonly string[], timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawnTiedToTest(process.execPath, withServingNodeFlags(['--import', 'tsx', SHARD_MAIN, ...args]), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** Resident memory of a process in bytes (Linux /proc). */
export async function residentBytes(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}
