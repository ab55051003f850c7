import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { withMallocEnvironment } from './malloc-environment.js';
import { withServingNodeFlags } from './serving-node-flags.js';

/** Children started here that are still running, by process group (the child's pid). */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

let setprivChecked: boolean | null = null;
/** Whether util-linux's setpriv can give a child a parent-death signal (Linux). */
function canSetParentDeathSignal(): boolean {
  setprivChecked ??= process.platform === 'linux' && spawnSync('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'true'], { stdio: 'ignore' }).status === 0;
  return setprivChecked;
}

export interface TiedChildOptions {
  /** stdin, stdout, stderr (an IPC channel is added for Node children). */
  readonly stdio?: readonly ['ignore' | 'pipe' | 'inherit', 'ignore' | 'pipe' | 'inherit', 'ignore' | 'pipe' | 'inherit'];
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /**
   * A Node child that calls exitWithParent(): it gets an IPC channel and drains when this process
   * goes. Other programs (etcd) get a parent-death signal (SIGKILL) through setpriv where it exists.
   * Node children (routers, shards: the processes that hold weights) also get the allocator settings
   * (withMallocEnvironment: jemalloc where installed, else glibc with MALLOC_ENVIRONMENT) and the serving
   * Node flags (withServingNodeFlags: `args` are then Node's, the script first or after flags).
   */
  readonly node?: boolean;
}

/**
 * Starts a child that never outlives this process: in a process group of its own (so stopping it
 * stops whatever it started), killed with its group if this process exits normally or on an uncaught
 * error, and told when this process dies any other way (IPC channel or parent-death signal).
 */
export function spawnTied(command: string, args: readonly string[], options: TiedChildOptions = {}): ChildProcess {
  const stdio: StdioOptions = [...(options.stdio ?? ['ignore', 'pipe', 'pipe']), ...(options.node ? ['ipc' as const] : [])];
  const [cmd, argv] = options.node ? [command, withServingNodeFlags(args)] : canSetParentDeathSignal() ? ['setpriv', ['--pdeathsig', 'SIGKILL', '--', command, ...args]] : [command, [...args]];
  const env = options.node ? withMallocEnvironment(options.env ?? process.env) : options.env;
  const child = spawn(cmd, argv, { stdio, detached: true, ...(env ? { env } : {}), ...(options.cwd ? { cwd: options.cwd } : {}) });
  // The IPC channel is only a lifeline: it must not keep this process alive.
  child.channel?.unref();
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) signalGroup(c, 'SIGKILL');
    });
  }
  return child;
}

/** Sends `signal` to the child's process group (the child and what it started); false if it is gone. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): boolean {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return false;
  try {
    process.kill(-child.pid, signal);
    return true;
  } catch {
    try {
      return child.kill(signal);
    } catch {
      return false;
    }
  }
}

/**
 * Stops a child's process group: `signal` (SIGTERM: drain), then SIGKILL if it has not exited after
 * `graceMs`. Resolves once the child has exited.
 */
export function stopGroup(child: ChildProcess, graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(kill);
      // Whatever the child started and left behind goes with it.
      signalGroup(child, 'SIGKILL');
      resolve();
    });
    signalGroup(child, signal);
  });
}

/** Every tied child still running (for a shutdown that must not leave one behind). */
export function liveTiedChildren(): readonly ChildProcess[] {
  return [...live];
}
