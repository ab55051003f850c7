/**
 * A cluster's plan and shard records, followed for a bench by a child process at the lowest CPU priority
 * (bench/registry-follower-child.ts) rather than by watches in the bench's own process. The bench's
 * process runs the client loops whose token timestamps are measured: when it decoded and parsed every
 * record change itself, that work fell at the switch moment, on the shards' core, and late timestamps
 * (longer gaps) were the measurement's own. The child reads the changes; this side parses one JSON
 * line per change.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { PlacementPlan, ShardRecord } from '@expertmesh/discovery';
import { spawnTied, stopGroup } from '@expertmesh/process-lifecycle';

/** One change as the child saw it; `atEpochMs` is when its watch delivered it. */
export type RegistryChange = { readonly atEpochMs: number; readonly plan: PlacementPlan | null } | { readonly atEpochMs: number; readonly records: ShardRecord[] };

export interface RegistryFollower {
  /** The follower's process id (its process group). */
  readonly pid: number;
  /** The autogroup nice the child runs at, null when it could not lower it (no autogroups, or not its own). */
  readonly autogroupNice: number | null;
  stop(): Promise<void>;
}

const CHILD = join(import.meta.dirname, 'registry-follower-child.ts');

/**
 * Starts the child and resolves once both of its watches have delivered (every change from then on
 * reaches `onChange`, in the order the child saw them). Rejects if the child exits first or is not
 * ready within `readyMs`.
 */
export async function startRegistryFollower(etcdUrl: string, cluster: string, onChange: (change: RegistryChange) => void, readyMs = 60_000): Promise<RegistryFollower> {
  const child: ChildProcess = spawnTied(process.execPath, ['--import', 'tsx', CHILD, '--etcd', etcdUrl, '--cluster', cluster], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const stop = async (): Promise<void> => {
    child.stdin?.end();
    await stopGroup(child, 5_000);
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    const autogroupNice = await new Promise<number | null>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`bench: the registry follower was not ready within ${readyMs} ms`)), readyMs);
      child.once('exit', (code, signal) => reject(new Error(`bench: the registry follower exited (${signal ?? code}) before it was ready`)));
      lines.on('line', (line) => {
        const message = JSON.parse(line) as { ready?: true; autogroupNice?: number | null; at?: number; plan?: PlacementPlan | null; records?: ShardRecord[] };
        if (message.ready) return resolve(message.autogroupNice ?? null);
        if (message.at === undefined) return;
        onChange(message.records ? { atEpochMs: message.at, records: message.records } : { atEpochMs: message.at, plan: message.plan ?? null });
      });
    });
    return { pid: child.pid!, autogroupNice, stop };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
