import { describe, expect, it } from 'vitest';
import { activityBetween, busiestBetween, parseMeminfo, parseProcStat, parseVmstat, type ActivitySnapshot } from '../../bench/machine-activity.js';

/** What else the machine did while bench:vs-llama-cpp timed a batch, read from /proc text. */
describe('machine activity', () => {
  it('reads busy, iowait and steal seconds from /proc/stat (ticks of 10 ms)', () => {
    const text = 'cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 50 10 15 2500 20 2 3 3 0 0\nintr 1 2\n';
    const t = parseProcStat(text);
    expect(t.busy).toBeCloseTo((100 + 20 + 30 + 5 + 6) / 100, 10);
    expect(t.iowait).toBeCloseTo(0.4, 10);
    expect(t.steal).toBeCloseTo(0.07, 10);
    expect(() => parseProcStat('intr 1\n')).toThrow(/no aggregate "cpu" line/);
  });

  it('reads meminfo in bytes and vmstat counters', () => {
    const m = parseMeminfo('MemTotal:       24000000 kB\nDirty:              2048 kB\nWriteback:             4 kB\nHugePages_Total:       0\n');
    expect(m.get('Dirty')).toBe(2048 * 1024);
    expect(m.get('Writeback')).toBe(4096);
    const v = parseVmstat('thp_fault_alloc 15793\nthp_fault_fallback 3\npgfault 99\n');
    expect(v.get('thp_fault_alloc')).toBe(15793);
    expect(v.get('thp_fault_fallback')).toBe(3);
  });

  it("counts the machine's busy time beyond this process's own as other work, per second of wall time", () => {
    const at = (atMs: number, busy: number, own: number, dirty: number, faults: number): ActivitySnapshot => ({
      atMs,
      cpu: { busy, iowait: 1, steal: 0 },
      ownCpuSeconds: own,
      dirtyBytes: dirty,
      writebackBytes: 0,
      vmstat: { thp_fault_fallback: faults },
    });
    const a = activityBetween(at(0, 100, 10, 512 * 2 ** 20, 2), at(4000, 108, 16, 0, 5));
    expect(a.wallSeconds).toBe(4);
    expect(a.ownCpuSeconds).toBe(6);
    expect(a.otherCpuSeconds).toBe(2);
    expect(a.otherCores).toBe(0.5);
    expect(a.dirtyMiBAtStart).toBe(512);
    expect(a.vmstat['thp_fault_fallback']).toBe(3);
    // Tick rounding can make the machine's busy time a little less than ours: never negative other work.
    expect(activityBetween(at(0, 100, 10, 0, 0), at(1000, 100.99, 11, 0, 0)).otherCpuSeconds).toBe(0);
  });

  it('names the processes that took the most CPU in between, excluding the given ones and new idle ones', () => {
    const before = new Map([
      [1, { comm: 'tsc', ticks: 100 }],
      [2, { comm: 'worker', ticks: 0 }],
      [3, { comm: 'kworker/0:1', ticks: 50 }],
    ]);
    const after = new Map([
      [1, { comm: 'tsc', ticks: 400 }],
      [2, { comm: 'worker', ticks: 9000 }],
      [3, { comm: 'kworker/0:1', ticks: 60 }],
      [4, { comm: 'new', ticks: 0 }],
      [5, { comm: 'khugepaged', ticks: 20 }],
    ]);
    expect(busiestBetween(before, after, new Set([2]), 2)).toEqual([
      { pid: 1, comm: 'tsc', cpuSeconds: 3 },
      { pid: 5, comm: 'khugepaged', cpuSeconds: 0.2 },
    ]);
  });
});
