import { join } from 'node:path';
import { lowerAutogroup, type LoweredAutogroup } from './joining-autogroup.js';

/** Whether a shard's flags make it a member of a cluster (--etcd or --registry), that is, a shard joining one. */
export function joinsCluster(args: readonly string[]): boolean {
  return args.some((a) => a === '--etcd' || a === '--registry' || a.startsWith('--etcd=') || a.startsWith('--registry='));
}

let lowered: LoweredAutogroup | null = null;

/**
 * Lowers the autogroup of a shard process joining a cluster from its start (see joining-autogroup.ts)
 * until restoreJoiningAutogroup, just before it announces its experts. Called before the heavy modules
 * (onnxruntime, gRPC, etcd, telemetry) load: by the CLI's entry for `expertmesh shard`, and below for
 * main.ts run directly. Flags are not validated yet: a wrong command line exits soon after, lowered,
 * which harms nobody. Once per process.
 */
export function lowerIfJoiningShard(args: readonly string[]): void {
  if (!lowered && joinsCluster(args)) lowered = lowerAutogroup();
}

// main.ts imports this module first (ES modules evaluate their imports in order), so this runs before its other imports.
if (process.argv[1] === join(import.meta.dirname, 'main.ts')) lowerIfJoiningShard(process.argv.slice(2));

/** Puts a joining shard's autogroup back (nothing when it was not lowered); says so when the kernel refused. */
export async function restoreJoiningAutogroup(): Promise<void> {
  if (lowered && !(await lowered.restore())) {
    process.stderr.write(`expertmesh shard: could not put the autogroup back to nice ${lowered.from}; serving at nice ${lowered.to}\n`);
  }
}
