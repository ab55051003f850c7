import { describe, expect, it } from 'vitest';
import type { AutogroupAccess } from '../src/joining-autogroup.js';
import { LEAVING_NICE, lowerForExit } from '../src/leaving-priority.js';

/** An autogroup whose writes are logged; `refuse` makes every write throw like the kernel's EAGAIN. */
function autogroup(options: { sid?: number; pid?: number; nice?: number | null; refuse?: boolean } = {}): AutogroupAccess & { writes: number[] } {
  const state = {
    writes: [] as number[],
    session: () => ({ sid: options.sid ?? 7, pid: options.pid ?? 7 }),
    readNice: () => (options.nice === undefined ? 0 : options.nice),
    writeNice(nice: number) {
      if (options.refuse) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' });
      state.writes.push(nice);
    },
  };
  return state;
}

describe('a leaving shard past its hand-over yields the core', () => {
  it('lowers its own autogroup and the tearing-down thread to the weakest weight', () => {
    const g = autogroup();
    const threadNice: number[] = [];
    expect(lowerForExit(g, (n) => threadNice.push(n))).toEqual({ autogroup: true, thread: true });
    expect(LEAVING_NICE).toBe(19);
    expect(g.writes).toEqual([19]);
    expect(threadNice).toEqual([19]);
  });

  it('leaves an autogroup it shares with other processes alone, and one already as low', () => {
    const shared = autogroup({ sid: 3, pid: 7 });
    expect(lowerForExit(shared, () => undefined)).toEqual({ autogroup: false, thread: true });
    expect(shared.writes).toEqual([]);
    const low = autogroup({ nice: 19 });
    expect(lowerForExit(low, () => undefined).autogroup).toBe(false);
    expect(low.writes).toEqual([]);
    const off = autogroup({ nice: null });
    expect(lowerForExit(off, () => undefined).autogroup).toBe(false);
  });

  it('never throws when the kernel refuses either lowering', () => {
    const g = autogroup({ refuse: true });
    expect(
      lowerForExit(g, () => {
        throw new Error('EACCES');
      }),
    ).toEqual({ autogroup: false, thread: false });
  });
});
