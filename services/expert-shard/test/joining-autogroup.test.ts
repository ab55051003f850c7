import { afterEach, describe, expect, it, vi } from 'vitest';
import { lowerAutogroup, type AutogroupAccess } from '../src/joining-autogroup.js';
import { joinsCluster } from '../src/joining-start.js';

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

/** An autogroup whose writes are logged and, in turn, answered by `refusals` (an error code, or null: accepted). */
function autogroup(options: { sid?: number; pid?: number; nice?: number | null; refusals?: (string | null)[] } = {}): AutogroupAccess & { writes: number[]; nice: number | null } {
  const refusals = [...(options.refusals ?? [])];
  const state = {
    writes: [] as number[],
    nice: options.nice === undefined ? 0 : options.nice,
    session: () => ({ sid: options.sid ?? 42, pid: options.pid ?? 42 }),
    readNice: () => state.nice,
    writeNice(nice: number) {
      const refusal = refusals.shift();
      if (refusal) throw errno(refusal);
      state.writes.push(nice);
      state.nice = nice;
    },
  };
  return state;
}

describe('a joining shard lowers its autogroup', () => {
  afterEach(() => void vi.useRealTimers());

  it('lowers it to 19 after checking that it can write the old value back, and puts it back once', async () => {
    const g = autogroup({ nice: 2 });
    const lowered = lowerAutogroup(19, g);
    expect(lowered).toMatchObject({ from: 2, to: 19 });
    expect(g.writes).toEqual([2, 19]);
    expect(await lowered!.restore()).toBe(true);
    expect(await lowered!.restore()).toBe(true);
    expect(g.writes).toEqual([2, 19, 2]);
    expect(g.nice).toBe(2);
  });

  it('does nothing when the process does not lead its own session (its autogroup holds other processes)', () => {
    const g = autogroup({ sid: 7, pid: 42 });
    expect(lowerAutogroup(19, g)).toBeNull();
    expect(g.writes).toEqual([]);
  });

  it('does nothing when the session is unknown or autogroups are off', () => {
    const off = autogroup({ nice: null });
    expect(lowerAutogroup(19, off)).toBeNull();
    const unknown = { ...autogroup(), session: () => null };
    expect(lowerAutogroup(19, unknown)).toBeNull();
    expect(off.writes).toEqual([]);
  });

  it('does nothing when the old value cannot be written back (no CAP_SYS_NICE for a negative nice, or a busy kernel)', () => {
    for (const code of ['EPERM', 'EACCES', 'EAGAIN']) {
      const g = autogroup({ nice: -5, refusals: [code] });
      expect(lowerAutogroup(19, g)).toBeNull();
      expect(g.writes).toEqual([]);
      expect(g.nice).toBe(-5);
    }
  });

  it('does nothing when the autogroup is already at or below the level asked', () => {
    const g = autogroup({ nice: 19 });
    expect(lowerAutogroup(19, g)).toBeNull();
    expect(g.writes).toEqual([]);
  });

  it("retries a lowering the kernel's rate limit refused, and puts it back through the same limit", async () => {
    vi.useFakeTimers();
    const g = autogroup({ refusals: [null, 'EAGAIN', 'EAGAIN'] });
    const lowered = lowerAutogroup(19, g)!;
    expect(g.nice).toBe(0);
    await vi.advanceTimersByTimeAsync(250);
    expect(g.nice).toBe(19);
    const g2 = autogroup({ refusals: [null, null, 'EAGAIN', 'EAGAIN'] });
    const lowered2 = lowerAutogroup(19, g2)!;
    const restored = lowered2.restore();
    await vi.advanceTimersByTimeAsync(250);
    expect(await restored).toBe(true);
    expect(g2.writes).toEqual([0, 19, 0]);
    expect(await lowered.restore()).toBe(true);
    expect(g.nice).toBe(0);
  });

  it('a restore before the retried lowering went through writes nothing, and the lowering is not retried after it', async () => {
    vi.useFakeTimers();
    const g = autogroup({ refusals: [null, 'EAGAIN'] });
    const lowered = lowerAutogroup(19, g)!;
    expect(await lowered.restore()).toBe(true);
    await vi.advanceTimersByTimeAsync(1000);
    expect(g.writes).toEqual([0]);
    expect(g.nice).toBe(0);
  });

  it('reports a restore the kernel refuses', async () => {
    const g = autogroup({ refusals: [null, null, 'EPERM'] });
    expect(await lowerAutogroup(19, g)!.restore()).toBe(false);
  });
});

describe('which shards count as joining a cluster', () => {
  it('one given --etcd or --registry', () => {
    expect(joinsCluster(['--model', 'm', '--cluster', 'c', '--etcd', 'http://127.0.0.1:2379'])).toBe(true);
    expect(joinsCluster(['--model', 'm', '--registry=http://127.0.0.1:9'])).toBe(true);
  });
  it('not one without a registry', () => {
    expect(joinsCluster(['--model', 'm', '--experts', 'all'])).toBe(false);
  });
});
