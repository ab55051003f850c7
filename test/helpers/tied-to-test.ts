import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

type ThreeStreams = readonly ['ignore' | 'pipe' | 'inherit', 'ignore' | 'pipe' | 'inherit', 'ignore' | 'pipe' | 'inherit'];

/**
 * Spawns a product process (a shard, a router, `up`, any `expertmesh` command) for a test, with an IPC channel
 * beside `stdio` (default: stdin ignored, stdout and stderr piped). The product's processes call exitWithParent(),
 * so one a test started drains and exits when the test's worker dies (a timeout, kill -9) before its afterAll could
 * stop it. The channel is only a lifeline: unref'd, so it never keeps the test alive.
 */
export function spawnTiedToTest(command: string, args: readonly string[], options: Omit<SpawnOptions, 'stdio'> & { readonly stdio?: ThreeStreams } = {}): ChildProcess {
  const { stdio = ['ignore', 'pipe', 'pipe'], ...rest } = options;
  const child = spawn(command, args, { ...rest, stdio: [...stdio, 'ipc'] });
  child.channel?.unref();
  return child;
}
