import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CgroupSetupError, ShardCpuCgroups } from '../../bench/shard-cgroups.js';
import { perShardWindow } from '../../bench/shard-samples.js';

// bench:rebalance --shard-cpu-quota. Needs root and a cgroup cpu controller (CI runs as root): without them
// ShardCpuCgroups.open throws a CgroupSetupError that says so, and these tests fail with it.

const started: ChildProcess[] = [];
const opened: ShardCpuCgroups[] = [];
afterEach(() => {
  for (const c of started.splice(0)) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const g of opened.splice(0)) g.close();
});

/** A shell in a process group of its own that has started a child (a `sleep`) and waits for it. */
async function groupOfTwo(): Promise<{ shell: number; child: number }> {
  const c = spawn('sh', ['-c', 'sleep 60 & echo $!; wait'], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
  started.push(c);
  const child = await new Promise<number>((resolve) => c.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { shell: c.pid!, child };
}

/** The cgroup path of `pid` in the hierarchy (v1: the `cpu` line, v2: the `0::` line), relative to its root. */
function cgroupOf(pid: number, groups: ShardCpuCgroups): string {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const line = groups.hierarchy.version === 1 ? lines.find((l) => l.split(':')[1]?.split(',').includes('cpu')) : lines.find((l) => l.startsWith('0::'));
  return line!.slice(line!.indexOf(':', line!.indexOf(':') + 1) + 1);
}

const open = (cores: number, periodUs?: number): ShardCpuCgroups => {
  const g = ShardCpuCgroups.open(cores, periodUs);
  opened.push(g);
  return g;
};

describe('a CPU cgroup per shard (bench:rebalance --shard-cpu-quota)', () => {
  it('puts a whole process group in a cgroup with the quota, and removes it on close with the processes moved out', async () => {
    const groups = open(0.2);
    const { shell, child } = await groupOfTwo();
    const dir = groups.place('shard-0', shell);
    expect(groups.members('shard-0').sort()).toEqual([shell, child].sort());
    const relative = dir.slice(groups.hierarchy.root.length);
    expect(cgroupOf(shell, groups)).toBe(relative);
    expect(cgroupOf(child, groups)).toBe(relative);
    const limit = groups.hierarchy.version === 1 ? readFileSync(join(dir, 'cpu.cfs_quota_us'), 'utf8').trim() : readFileSync(join(dir, 'cpu.max'), 'utf8').trim().split(' ')[0];
    expect(limit).toBe('20000');
    groups.close();
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(groups.dir)).toBe(false);
    // Still running, back in the root cgroup.
    expect(cgroupOf(child, groups)).toBe('/');
    expect(() => groups.place('shard-1', shell)).toThrow(/closed/);
  });

  it('throttles a process that wants more than its quota, and the samples show it per window', async () => {
    const groups = open(0.1, 10_000);
    const burner = spawn(process.execPath, ['-e', 'for (;;) {}'], { detached: true, stdio: 'ignore' });
    started.push(burner);
    groups.place('shard-0', burner.pid!);
    const first = { t: performance.now(), metrics: [], throttling: { 'shard-0': groups.throttling('shard-0') } };
    const deadline = performance.now() + 30_000;
    // The kernel counts throttled periods at each period's timer but adds throttled time only when a throttled run
    // queue is released, which lags behind on a busy machine: wait for both.
    const throttled = (t: { throttledPeriods: number; throttledMs: number }): boolean => t.throttledPeriods >= 5 && t.throttledMs > 0;
    while (!throttled(groups.throttling('shard-0'))) {
      if (performance.now() > deadline) throw new Error(`not throttled within 30 s: ${JSON.stringify(groups.throttling('shard-0'))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const last = { t: performance.now(), metrics: [], throttling: { 'shard-0': groups.throttling('shard-0') } };
    expect(last.throttling['shard-0'].throttledMs).toBeGreaterThan(0);
    const window = perShardWindow([first, last], first.t, last.t);
    expect(window!.throttling['shard-0']!.throttledPeriodsPct).toBeGreaterThan(0);
  });

  it('refuses quotas and periods the kernel would not take, saying so', () => {
    expect(() => ShardCpuCgroups.open(0)).toThrow(CgroupSetupError);
    expect(() => ShardCpuCgroups.open(0.2, 500)).toThrow(/period/);
    expect(() => ShardCpuCgroups.open(0.005, 100_000)).toThrow(/minimum/);
  });
});

describe('per-shard windows from the router’s metrics (bench:rebalance)', () => {
  it('gives bytes sent per shard over the window, their max over mean, and the worst layer per imbalance phase', () => {
    const line = (shard: string, direction: string, v: number): string => `expertmesh_dispatch_bytes_total{shard="${shard}",direction="${direction}"} ${v}`;
    const samples = [
      { t: 0, metrics: [line('a', 'sent', 100), line('b', 'sent', 100), line('a', 'received', 5)], throttling: {}, cpuMs: { 'shard-0': 1000, 'shard-1': 50 } },
      { t: 1000, metrics: [line('a', 'sent', 400), line('b', 'sent', 200), line('a', 'received', 9000)], throttling: {}, cpuMs: { 'shard-0': 1100, 'shard-1': 60 } },
      {
        t: 2000,
        metrics: [line('a', 'sent', 700), line('b', 'sent', 300), 'expertmesh_expert_imbalance_ratio{layer="1",phase="before"} 2.5', 'expertmesh_expert_imbalance_ratio{layer="2",phase="before"} 1.7', 'expertmesh_expert_imbalance_ratio{layer="1",phase="after"} 1.04'],
        throttling: {},
        cpuMs: { 'shard-0': 1300, 'shard-1': 150 },
      },
    ];
    const w = perShardWindow(samples, 0, 2000)!;
    expect(w.seconds).toBe(2);
    expect(w.sentBytes).toEqual({ a: 600, b: 200 });
    expect(w.sentMaxOverMean).toBe(1.5);
    expect(w.cpuMsPerSecond).toEqual({ 'shard-0': 150, 'shard-1': 50 });
    expect(w.cpuMaxOverMean).toBe(1.5);
    expect(w.routerImbalance).toEqual({ before: 2.5, after: 1.04 });
    expect(perShardWindow(samples, 500, 1500)).toBeNull();
  });

  it("gives each shard's calls per second and its CPU per call, joining the bench's names with the router's labels", () => {
    const calls = (shard: string, sum: number, count: number): string[] => [
      `expertmesh_shard_call_duration_seconds_sum{shard="${shard}"} ${sum}`,
      `expertmesh_shard_call_duration_seconds_count{shard="${shard}"} ${count}`,
    ];
    const samples = [
      { t: 0, metrics: [...calls('127.0.0.1:1', 1, 100), ...calls('127.0.0.1:2', 2, 100)], throttling: {}, cpuMs: { 'shard-0': 0, 'shard-1': 500 }, routerCpuMs: 100 },
      { t: 2000, metrics: [...calls('127.0.0.1:1', 3, 300), ...calls('127.0.0.1:2', 3, 150)], throttling: {}, cpuMs: { 'shard-0': 1000, 'shard-1': 700 }, routerCpuMs: 1700 },
    ];
    const w = perShardWindow(samples, 0, 2000, { 'shard-0': '127.0.0.1:1', 'shard-1': '127.0.0.1:2' })!;
    expect(w.callsPerSecond).toEqual({ '127.0.0.1:1': 100, '127.0.0.1:2': 25 });
    expect(w.callMs).toEqual({ '127.0.0.1:1': 10, '127.0.0.1:2': 20 });
    // shard-0: 500 ms/s over 100 calls/s; shard-1: 100 ms/s over 25 calls/s.
    expect(w.cpuMsPerCall).toEqual({ 'shard-0': 5, 'shard-1': 4 });
    expect(w.routerCpuMsPerSecond).toBe(800);
    // Without the addresses there is nothing to join.
    expect(perShardWindow(samples, 0, 2000)!.cpuMsPerCall).toEqual({});
    // Samples without the router's CPU (the first test's) give none.
    expect(perShardWindow(samples.map(({ routerCpuMs: _, ...s }) => s), 0, 2000)!.routerCpuMsPerSecond).toBeNull();
  });
});
