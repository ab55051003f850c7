/**
 * What else the machine did while a benchmark timed something (Linux /proc), so that a run disturbed by other
 * work says so instead of reading as a slow engine: the CPU time every other process took (machine busy time minus
 * this process's own), I/O wait, steal, dirty page-cache bytes, and the kernel's huge-page and fault counters.
 * On a 2-core machine one busy neighbour halves a spinning thread pool's small-batch speed, while batch 32 barely
 * notices (docs/benchmarks.md, "Spinning on a shared machine"). Clock ticks are USER_HZ = 100 on Linux.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICK_SECONDS = 0.01;

/** Machine-wide CPU seconds (all cores summed) from /proc/stat's first line. */
export interface CpuTimes {
  /** user + nice + system + irq + softirq (guest time is inside user). */
  readonly busy: number;
  readonly iowait: number;
  readonly steal: number;
}

export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('/proc/stat has no aggregate "cpu" line');
  const [user, nice, system, , iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
  return { busy: (user! + nice! + system! + irq! + softirq!) * TICK_SECONDS, iowait: iowait! * TICK_SECONDS, steal: (steal ?? 0) * TICK_SECONDS };
}

/** /proc/meminfo's `Name: N kB` lines as bytes. */
export function parseMeminfo(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(\S+):\s+(\d+)(?: kB)?$/gm)) out.set(m[1]!, Number(m[2]) * 1024);
  return out;
}

/** /proc/vmstat's `name N` lines. */
export function parseVmstat(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(\w+) (\d+)$/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** The vmstat counters a run records the change of: huge pages got or refused at fault, collapsed, compaction stalls, faults. */
export const VMSTAT_COUNTERS = ['thp_fault_alloc', 'thp_fault_fallback', 'thp_collapse_alloc', 'compact_stall', 'pgmajfault', 'pgfault'] as const;

export interface ActivitySnapshot {
  readonly atMs: number;
  readonly cpu: CpuTimes;
  readonly ownCpuSeconds: number;
  readonly dirtyBytes: number;
  readonly writebackBytes: number;
  readonly vmstat: Readonly<Record<string, number>>;
}

export function snapshot(): ActivitySnapshot {
  const meminfo = parseMeminfo(readFileSync('/proc/meminfo', 'utf8'));
  const vm = parseVmstat(readFileSync('/proc/vmstat', 'utf8'));
  const own = process.cpuUsage();
  return {
    atMs: performance.now(),
    cpu: parseProcStat(readFileSync('/proc/stat', 'utf8')),
    ownCpuSeconds: (own.user + own.system) / 1e6,
    dirtyBytes: meminfo.get('Dirty') ?? 0,
    writebackBytes: meminfo.get('Writeback') ?? 0,
    vmstat: Object.fromEntries(VMSTAT_COUNTERS.map((k) => [k, vm.get(k) ?? 0])),
  };
}

/** What the machine did between two snapshots of this process. */
export interface Activity {
  readonly wallSeconds: number;
  readonly ownCpuSeconds: number;
  /** Busy CPU seconds of everything but this process (other processes, kernel threads, interrupts). */
  readonly otherCpuSeconds: number;
  /** otherCpuSeconds / wallSeconds: how many cores' worth the rest of the machine took. */
  readonly otherCores: number;
  readonly iowaitSeconds: number;
  readonly stealSeconds: number;
  readonly dirtyMiBAtStart: number;
  readonly vmstat: Readonly<Record<string, number>>;
}

export function activityBetween(a: ActivitySnapshot, b: ActivitySnapshot): Activity {
  const wallSeconds = (b.atMs - a.atMs) / 1000;
  const ownCpuSeconds = b.ownCpuSeconds - a.ownCpuSeconds;
  // Ticks are 10 ms and sampled per core: a little negative is rounding, not time.
  const otherCpuSeconds = Math.max(0, b.cpu.busy - a.cpu.busy - ownCpuSeconds);
  return {
    wallSeconds,
    ownCpuSeconds,
    otherCpuSeconds,
    otherCores: wallSeconds > 0 ? otherCpuSeconds / wallSeconds : 0,
    iowaitSeconds: b.cpu.iowait - a.cpu.iowait,
    stealSeconds: b.cpu.steal - a.cpu.steal,
    dirtyMiBAtStart: (a.dirtyBytes + a.writebackBytes) / 2 ** 20,
    vmstat: Object.fromEntries(Object.entries(b.vmstat).map(([k, v]) => [k, v - (a.vmstat[k] ?? 0)])),
  };
}

/** Runs `fn` and returns its result with what the machine did meanwhile. */
export async function withActivity<T>(fn: () => Promise<T>): Promise<{ result: T; activity: Activity }> {
  const before = snapshot();
  const result = await fn();
  return { result, activity: activityBetween(before, snapshot()) };
}

/** CPU ticks (user + system) of every process now, by pid, with its command name. */
export function processTicks(): Map<number, { readonly comm: string; readonly ticks: number }> {
  const out = new Map<number, { comm: string; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
      const f = stat.slice(close + 2).split(' ');
      out.set(Number(d), { comm: stat.slice(stat.indexOf('(') + 1, close), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // The process ended between readdir and read.
    }
  }
  return out;
}

/**
 * The processes (not `exclude`) that took the most CPU between two `processTicks` readings, largest first. One
 * that started and ended in between is in neither reading: its time shows only in `Activity.otherCpuSeconds`.
 */
export function busiestBetween(
  a: ReadonlyMap<number, { readonly comm: string; readonly ticks: number }>,
  b: ReadonlyMap<number, { readonly comm: string; readonly ticks: number }>,
  exclude: ReadonlySet<number>,
  top = 5,
): { pid: number; comm: string; cpuSeconds: number }[] {
  const rows: { pid: number; comm: string; cpuSeconds: number }[] = [];
  for (const [pid, now] of b) {
    if (exclude.has(pid)) continue;
    const ticks = now.ticks - (a.get(pid)?.ticks ?? 0);
    if (ticks > 0) rows.push({ pid, comm: now.comm, cpuSeconds: ticks * TICK_SECONDS });
  }
  return rows.sort((x, y) => y.cpuSeconds - x.cpuSeconds).slice(0, top);
}

export interface SettleResult {
  readonly seconds: number;
  readonly dirtyMiBBefore: number;
  readonly dirtyMiBAfter: number;
  /** Cores' worth of CPU the rest of the machine used in the last quiet-check window. */
  readonly otherCores: number;
  readonly quiet: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Before timing: writes the page cache back (`sync`: gigabytes of fresh GGUF and checkpoint files are otherwise
 * flushed by kernel threads while the first worker runs) and waits until dirty + write-back pages are under
 * `dirtyMiB`, then until one `windowMs` window sees the rest of the machine use under `maxOtherCores`, up to
 * `timeoutMs` in all. Returns what it found; `quiet` false means the timings may run beside other work.
 */
export async function settle(options: { dirtyMiB?: number; maxOtherCores?: number; windowMs?: number; timeoutMs?: number } = {}): Promise<SettleResult> {
  const { dirtyMiB = 64, maxOtherCores = 0.15, windowMs = 2000, timeoutMs = 60_000 } = options;
  const start = performance.now();
  const dirtyNow = (): number => {
    const m = parseMeminfo(readFileSync('/proc/meminfo', 'utf8'));
    return ((m.get('Dirty') ?? 0) + (m.get('Writeback') ?? 0)) / 2 ** 20;
  };
  const dirtyMiBBefore = dirtyNow();
  execFileSync('sync');
  while (dirtyNow() > dirtyMiB && performance.now() - start < timeoutMs) await sleep(250);
  const dirtyMiBAfter = dirtyNow();
  let otherCores = Number.POSITIVE_INFINITY;
  do {
    const a = snapshot();
    await sleep(windowMs);
    otherCores = activityBetween(a, snapshot()).otherCores;
  } while (otherCores > maxOtherCores && performance.now() - start < timeoutMs);
  return { seconds: (performance.now() - start) / 1000, dirtyMiBBefore, dirtyMiBAfter, otherCores, quiet: otherCores <= maxOtherCores };
}
