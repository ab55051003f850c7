import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A CPU cgroup per shard process, each with its own quota, so that on one box every shard computes as if it had a
 * small machine of its own: a shard that gets more work is throttled, instead of taking CPU from the others. Used by
 * bench/rebalance.ts --shard-cpu-quota. cgroup v1's `cpu` controller (cpu.cfs_quota_us) or cgroup v2's (cpu.max),
 * whichever holds the controller. Everything lives under one parent of a temporary name; close() moves the processes
 * still inside back to the root and removes every directory made, synchronously, so that it can run on exit too.
 */

/** Throttling counters of one cgroup (cpu.stat), cumulative since it was made. */
export interface CpuThrottling {
  readonly periods: number;
  readonly throttledPeriods: number;
  readonly throttledMs: number;
}

/** Which cgroup interface carries the cpu controller, and where its root is mounted. */
export interface CpuHierarchy {
  readonly version: 1 | 2;
  readonly root: string;
}

export class CgroupSetupError extends Error {}

const V1_ROOT = '/sys/fs/cgroup/cpu';

/** The cgroup2 mount point from /proc/self/mounts, if any. */
function cgroup2Mount(mounts: string): string | null {
  for (const line of mounts.split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type === 'cgroup2' && dir) return dir;
  }
  return null;
}

/**
 * Finds the hierarchy that holds the cpu controller: v1's cpu mount if it has CFS quotas, else a cgroup2 mount whose
 * root lists `cpu` among its controllers. Throws a CgroupSetupError that says what to do otherwise.
 */
export function findCpuHierarchy(): CpuHierarchy {
  if (existsSync(join(V1_ROOT, 'cpu.cfs_quota_us'))) return { version: 1, root: V1_ROOT };
  const v2 = cgroup2Mount(readFileSync('/proc/self/mounts', 'utf8'));
  if (v2 && readFileSync(join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) return { version: 2, root: v2 };
  throw new CgroupSetupError(
    `no cgroup cpu controller: neither ${V1_ROOT}/cpu.cfs_quota_us (cgroup v1) nor a cgroup2 mount listing "cpu" in cgroup.controllers${v2 ? ` (${v2} lists: ${readFileSync(join(v2, 'cgroup.controllers'), 'utf8').trim() || 'none'})` : ''}; run without --shard-cpu-quota, or on a host whose cpu controller is mounted`,
  );
}

/** Every process whose process group is `pgid` (the shard and anything it started), from /proc. */
function processGroupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Fields after the command (which may hold spaces, inside parentheses): state, ppid, pgrp.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      if (pgrp === pgid) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

export class ShardCpuCgroups {
  private readonly children = new Map<string, string>();
  private closed = false;
  private readonly onExit = (): void => this.close();

  private constructor(
    readonly hierarchy: CpuHierarchy,
    /** The parent directory, under the hierarchy's root. */
    readonly dir: string,
    /** Cores each cgroup may use (quota over period). */
    readonly cores: number,
    readonly periodUs: number,
  ) {
    process.once('exit', this.onExit);
  }

  /**
   * Makes the parent cgroup (a temporary name) for shards of `cores` cores each over a CFS period of `periodUs`.
   * Needs root and a cpu controller; throws a CgroupSetupError saying so otherwise.
   */
  static open(cores: number, periodUs = 100_000): ShardCpuCgroups {
    if (!(cores > 0 && cores <= 64)) throw new CgroupSetupError(`a shard's CPU quota takes 0 < cores ≤ 64, not ${cores}`);
    if (!(Number.isInteger(periodUs) && periodUs >= 1000 && periodUs <= 1_000_000)) throw new CgroupSetupError(`the CFS period takes 1000 … 1000000 µs, not ${periodUs}`);
    if (Math.round(cores * periodUs) < 1000) throw new CgroupSetupError(`${cores} cores over ${periodUs} µs is a quota under the kernel's 1000 µs minimum: use a longer period`);
    if (process.getuid?.() !== 0) throw new CgroupSetupError('CPU quotas per shard need root (cgroups are made under /sys/fs/cgroup): run as root, or without --shard-cpu-quota');
    const hierarchy = findCpuHierarchy();
    const dir = join(hierarchy.root, `expertmesh-bench-${process.pid}-${Date.now().toString(36)}`);
    mkdirSync(dir);
    const groups = new ShardCpuCgroups(hierarchy, dir, cores, periodUs);
    if (hierarchy.version === 2) {
      // v2 hands a controller to a child only when the parent enables it for its subtree (the root first).
      try {
        for (const d of [hierarchy.root, dir]) if (!readFileSync(join(d, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu')) writeFileSync(join(d, 'cgroup.subtree_control'), '+cpu');
      } catch (e) {
        groups.close();
        throw new CgroupSetupError(`cgroup v2 would not enable the cpu controller under ${hierarchy.root} (${(e as Error).message}); run without --shard-cpu-quota`);
      }
    }
    return groups;
  }

  /**
   * Puts `pid`'s whole process group (every thread of each process) into a cgroup of its own named `name`, with the
   * quota at once or (`limited` false) without one until `limit(name)`: a shard's start-up, which is not measured, then
   * does not take minutes under a small quota.
   */
  place(name: string, pid: number, limited = true): string {
    if (this.closed) throw new Error('the shard cgroups are closed');
    if (!/^[a-z0-9-]+$/.test(name) || this.children.has(name)) throw new Error(`cgroup name ${name} is not new or not [a-z0-9-]`);
    const dir = join(this.dir, name);
    mkdirSync(dir);
    this.children.set(name, dir);
    this.setQuota(dir, limited);
    // cgroup.procs moves a process with all its threads (onnxruntime's, workers, libuv's).
    const members = processGroupMembers(pid);
    for (const p of members.length ? members : [pid]) writeFileSync(join(dir, 'cgroup.procs'), String(p));
    return dir;
  }

  /** Sets cgroup `name`'s quota (placed without one). */
  limit(name: string): void {
    const dir = this.children.get(name);
    if (!dir) throw new Error(`no shard cgroup ${name}`);
    this.setQuota(dir, true);
  }

  private setQuota(dir: string, limited: boolean): void {
    const quota = Math.round(this.cores * this.periodUs);
    if (this.hierarchy.version === 1) {
      writeFileSync(join(dir, 'cpu.cfs_period_us'), String(this.periodUs));
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), limited ? String(quota) : '-1');
    } else {
      writeFileSync(join(dir, 'cpu.max'), `${limited ? quota : 'max'} ${this.periodUs}`);
    }
  }

  /** The processes in cgroup `name` now. */
  members(name: string): number[] {
    const dir = this.children.get(name);
    if (!dir) throw new Error(`no cgroup ${name}`);
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }

  /** Throttling so far of cgroup `name`. */
  throttling(name: string): CpuThrottling {
    const dir = this.children.get(name);
    if (!dir) throw new Error(`no cgroup ${name}`);
    const stat = new Map(readFileSync(join(dir, 'cpu.stat'), 'utf8').split('\n').filter(Boolean).map((l) => { const [k, v] = l.split(' '); return [k!, Number(v)] as const; }));
    // v1 counts throttled time in ns (throttled_time), v2 in µs (throttled_usec).
    const throttledMs = this.hierarchy.version === 1 ? (stat.get('throttled_time') ?? 0) / 1e6 : (stat.get('throttled_usec') ?? 0) / 1e3;
    return { periods: stat.get('nr_periods') ?? 0, throttledPeriods: stat.get('nr_throttled') ?? 0, throttledMs: Math.round(throttledMs) };
  }

  names(): string[] {
    return [...this.children.keys()];
  }

  /** Moves every process still inside back to the root and removes each cgroup and the parent. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    process.off('exit', this.onExit);
    const problems: string[] = [];
    for (const dir of [...this.children.values(), this.dir]) {
      try {
        for (const p of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            writeFileSync(join(this.hierarchy.root, 'cgroup.procs'), p);
          } catch {
            // Exited meanwhile.
          }
        }
        rmdirSync(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`${dir}: ${(e as Error).message}`);
      }
    }
    if (problems.length) process.stderr.write(`shard cgroups not all removed (rmdir them by hand): ${problems.join('; ')}\n`);
  }
}
