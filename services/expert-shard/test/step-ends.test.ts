import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { loadShardCompute, parseExpertSpec } from '../src/index.js';
import { loadExperts } from '../src/load-shard.js';
import { StepEnds } from '../src/step-ends.js';
import { float32Request, TINY_SHARD_LOAD, tinyCheckpoint } from './tiny-shard.js';

const LAST = 3;
/** Resolves after `n` turns of the event loop. */
const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};
/** Whether `p` has settled after a few event-loop turns, and with what. */
async function settled<T>(p: Promise<T>): Promise<{ value: T } | null> {
  let out: { value: T } | null = null;
  void p.then((value) => (out = { value }));
  await turns(5);
  return out;
}

describe('the end of a step, as a shard sees it', () => {
  afterEach(() => vi.useRealTimers());

  it('is the answer of a call for the last MoE layer; calls of other layers are not', async () => {
    let now = 1000;
    const ends = new StepEnds(LAST, 150, 150, 10, () => now);
    ends.answered(1);
    now += 1;
    const wait = ends.next();
    ends.answered(2);
    expect(await settled(wait)).toBeNull();
    now += 20;
    ends.answered(LAST);
    expect(await settled(wait)).toEqual({ value: 'step-end' });
  });

  it('resumes a waiter only two event-loop turns after the answer, once the answer is on its way', async () => {
    let now = 0;
    const ends = new StepEnds(LAST, 150, 150, 10, () => now);
    ends.answered(1);
    now = 30;
    const order: string[] = [];
    void ends.next().then(() => order.push('waiter'));
    ends.answered(LAST);
    setImmediate(() => order.push('first turn'));
    await turns(5);
    expect(order).toEqual(['first turn', 'waiter']);
  });

  it('does not wait on an idle shard, and waits at most maxWaitMs on a busy one', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let now = 0;
    const ends = new StepEnds(LAST, 150, 150, 10, () => now);
    expect(await ends.next()).toBe('idle');
    ends.answered(1);
    now = 40;
    const wait = ends.next();
    vi.advanceTimersByTime(149);
    expect(await settled(wait)).toBeNull();
    vi.advanceTimersByTime(1);
    expect(await settled(wait)).toEqual({ value: 'timeout' });
    // The timed-out waiter is gone: a later step end resumes nobody twice.
    ends.answered(LAST);
    await turns(3);
    now = 40 + 200;
    expect(await ends.next()).toBe('idle');
  });

  it('lets a wait right after a step end share its quiet part, but not one a call later', async () => {
    let now = 0;
    const ends = new StepEnds(LAST, 150, 150, 10, () => now);
    ends.answered(LAST);
    now = 5;
    expect(await ends.next()).toBe('step-end');
    now = 20;
    expect(await settled(ends.next())).toBeNull();
    ends.answered(1);
    now = 22;
    expect(await settled(ends.next())).toBeNull();
  });
});

describe('a serving shard switching plans', () => {
  const checkpoint = tinyCheckpoint('step-ends', 6);

  it('tells its step ends the layer of every call it answers', async () => {
    const shard = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const answered = vi.spyOn(shard.stepEnds, 'answered');
    for (const layer of shard.config.moeLayers) await shard.run(float32Request(shard, layer, 2, [1, 2]), performance.now());
    expect(answered.mock.calls.map((c) => c[0])).toEqual(shard.config.moeLayers);
  });

  it('builds its first graph, and each next one, only once a step has ended', async () => {
    const shard = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const gates: (() => void)[] = [];
    vi.spyOn(shard.stepEnds, 'next').mockImplementation(() => new Promise((resolve) => gates.push(() => resolve('step-end'))));
    const loading = loadExperts(checkpoint.dir, shard, parseExpertSpec('4-11'), TINY_SHARD_LOAD);
    // Held at the first wait, before anything is read or built: nothing moves until a step ends.
    await turns(5);
    expect(gates).toHaveLength(1);
    expect(await settled(loading)).toBeNull();
    let released = 0;
    while ((await settled(loading)) === null) {
      if (gates.length > released) gates[released++]!();
      else await new Promise((r) => setTimeout(r, 5));
    }
    // One wait before the first graph, one after each graph (experts 8-11 of every MoE layer are new), one before their first runs.
    expect(released).toBe(2 + shard.config.moeLayers.length);
    const next = (await loading)!;
    expect(next.heldLayers().map((l) => l.experts)).toEqual(shard.config.moeLayers.map(() => [4, 5, 6, 7, 8, 9, 10, 11]));
  });

  it('rests the joining factor after each graph while it has answered no call, and the serving factor once it has', async () => {
    const shard = await loadShardCompute(checkpoint.dir, { experts: new Set(), layers: null }, TINY_SHARD_LOAD);
    // No step to wait for in either load: only the rests after each graph arm timers.
    vi.spyOn(shard.stepEnds, 'next').mockResolvedValue('idle');
    const rests = vi.spyOn(globalThis, 'setTimeout');
    try {
      // Joining: the serving factor 0 would only yield a turn (no timer); the joining factor rests once per graph built.
      const joined = await loadExperts(checkpoint.dir, shard, parseExpertSpec('0-3'), TINY_SHARD_LOAD, 0, 12);
      expect(shard.stepEnds.answeredAny).toBe(false);
      expect(rests).toHaveBeenCalledTimes(shard.config.moeLayers.length);
      shard.beginSwitch(joined);
      await shard.run(float32Request(shard, shard.config.moeLayers[0]!, 2, [1, 2]), performance.now());
      expect(shard.stepEnds.answeredAny).toBe(true);
      rests.mockClear();
      // Serving: the same load's graphs rest by the serving factor (0: one turn each, no timer).
      await loadExperts(checkpoint.dir, shard, parseExpertSpec('0-7'), TINY_SHARD_LOAD, 0, 12);
      expect(rests).not.toHaveBeenCalled();
    } finally {
      rests.mockRestore();
    }
  });

  it('runs each graph it built once, on one zero row per expert, after its last build and before it hands the set over', async () => {
    const shard = await loadShardCompute(checkpoint.dir, parseExpertSpec('0-7'), TINY_SHARD_LOAD);
    const events: string[] = [];
    vi.spyOn(shard.stepEnds, 'next').mockImplementation(async () => (events.push('step end'), 'step-end'));
    const computePairs = LocalRoutedExperts.prototype.computePairs;
    const runs = vi.spyOn(LocalRoutedExperts.prototype, 'computePairs').mockImplementation(function (this: LocalRoutedExperts, layer, hidden, numTokens, pairs) {
      events.push(`run layer ${layer}: experts ${[...pairs.expertIds].join(',')}, rows ${[...pairs.tokenRows].join(',')}, ${hidden.every((x) => x === 0) ? 'zeros' : 'data'}`);
      return computePairs.call(this, layer, hidden, numTokens, pairs);
    });
    try {
      const next = await loadExperts(checkpoint.dir, shard, parseExpertSpec('4-11'), TINY_SHARD_LOAD);
      events.push('returned');
      expect(next.heldLayers().map((l) => l.experts)).toEqual(shard.config.moeLayers.map(() => [4, 5, 6, 7, 8, 9, 10, 11]));
    } finally {
      runs.mockRestore();
    }
    // The kept experts' graphs (4-7, shared with the serving set) are warm already: only the new graph of each layer runs, once.
    const layers = shard.config.moeLayers;
    expect(events).toEqual([
      'step end',
      ...layers.map(() => 'step end'),
      'step end',
      ...layers.map((l) => `run layer ${l}: experts 8,9,10,11, rows 0,1,2,3, zeros`),
      'returned',
    ]);
  });
});
