import { join } from 'node:path';
import { lowerAutogroup, type LoweredAutogroup } from './joining-autogroup.js';

/** Whether `argv` starts the shard entry (main.ts run directly) as a member of a cluster (--etcd or --registry). */
export function startsJoiningShard(argv: readonly string[], entry: string): boolean {
  return argv[1] === entry && argv.slice(2).some((a) => a === '--etcd' || a === '--registry' || a.startsWith('--etcd=') || a.startsWith('--registry='));
}

/**
 * Evaluated first of main.ts's imports (ES modules evaluate their imports in order), before onnxruntime,
 * gRPC, etcd and telemetry load: a shard process joining a cluster lowers its autogroup from its start
 * (see joining-autogroup.ts) until main.ts restores it, just before the shard announces its experts.
 * Flags are not validated yet: a wrong command line exits soon after, lowered, which harms nobody.
 */
export const joiningAutogroup: LoweredAutogroup | null = startsJoiningShard(process.argv, join(import.meta.dirname, 'main.ts')) ? lowerAutogroup() : null;

/** Puts a joining shard's autogroup back (nothing when it was not lowered); says so when the kernel refused. */
export async function restoreJoiningAutogroup(): Promise<void> {
  if (joiningAutogroup && !(await joiningAutogroup.restore())) {
    process.stderr.write(`expertmesh shard: could not put the autogroup back to nice ${joiningAutogroup.from}; serving at nice ${joiningAutogroup.to}\n`);
  }
}
