import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';

/**
 * Pins a process, all its threads included (taskset -a), to the given cores, as if it had a
 * machine of its own: the router on one core, the shards on the other, on a 2-core box.
 */
export function pinProcess(pid: number, cores: string): void {
  execFileSync('taskset', ['-a', '-c', '-p', cores, String(pid)], { stdio: 'ignore' });
}

/** The two cores of the pinned layout: the router's and the shards'. Refuses a machine with fewer than 2 or no taskset. */
export function pinnedLayout(): { router: string; shards: string; all: string } {
  if (cpus().length < 2) throw new Error('the pinned mode needs at least 2 cores (one for the router, one for the shards)');
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
  } catch {
    throw new Error('the pinned mode needs taskset (util-linux): apt-get install util-linux');
  }
  return { router: '0', shards: '1', all: `0-${cpus().length - 1}` };
}
