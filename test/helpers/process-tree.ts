import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * A process: its pid and its start time (clock ticks after boot), so that a pid the system has
 * given to another process since is never mistaken for it.
 */
export interface ProcessId {
  readonly pid: number;
  readonly start: number;
}

interface ProcessEntry extends ProcessId {
  readonly ppid: number;
  readonly state: string;
}

function entry(pid: number): ProcessEntry | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid … starttime(22nd)": comm may hold spaces and parentheses, so split after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid, ppid: Number(f[1]), state: f[0]!, start: Number(f[19]) };
  } catch {
    return null;
  }
}

function table(): ProcessEntry[] {
  return readdirSync('/proc').flatMap((name) => (/^\d+$/.test(name) ? [entry(Number(name))].filter((e): e is ProcessEntry => e !== null) : []));
}

/** Every live process below `pid` (children, grandchildren…). */
export function descendants(pid: number): ProcessId[] {
  const t = table();
  const found: ProcessId[] = [];
  const walk = (parent: number): void => {
    for (const e of t) {
      if (e.ppid === parent && e.state !== 'Z') {
        found.push({ pid: e.pid, start: e.start });
        walk(e.pid);
      }
    }
  };
  walk(pid);
  return found;
}

/** `pid`'s identity now (pid and start time), null when there is no such process. */
export function processId(pid: number): ProcessId | null {
  const e = entry(pid);
  return e && { pid: e.pid, start: e.start };
}

/** Whether this very process is still alive (not a zombie, and its pid not reused). */
export function alive(p: ProcessId): boolean {
  const e = entry(p.pid);
  return e !== null && e.start === p.start && e.state !== 'Z';
}

/** SIGKILL to the process if it is still this very one (never to a stranger that got its pid since). */
export function killIfAlive(p: ProcessId): void {
  if (!alive(p)) return;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    // Gone meanwhile.
  }
}

/** The command line of `pid`, arguments joined by spaces ('' when gone). */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** Waits until none of `processes` is alive; returns the command lines of those still alive after `timeoutMs`. */
export async function waitUntilGone(processes: readonly ProcessId[], timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = processes.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left.map((p) => `${p.pid}: ${commandLine(p.pid)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Established TCP connections `pid` holds to `port` on any address (its sockets matched in /proc/net/tcp). */
export function connectionsTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // Closed meanwhile.
    }
  }
  let count = 0;
  for (const file of ['tcp', 'tcp6']) {
    const lines = readFileSync(`/proc/${pid}/net/${file}`, 'utf8').trim().split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      const remotePort = parseInt(f[2]!.split(':')[1]!, 16);
      // State 01 is ESTABLISHED; field 9 is the socket's inode.
      if (f[3] === '01' && remotePort === port && inodes.has(f[9]!)) count++;
    }
  }
  return count;
}
