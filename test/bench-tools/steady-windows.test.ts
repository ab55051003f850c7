import { describe, expect, it } from 'vitest';
import { compareWithSteady, longestGap, steadyWindowGaps } from '../../bench/steady-windows.js';

/** A stream with a token every `every` ms from `from` to `to`, and the extra token times given. */
const stream = (from: number, to: number, every: number, extra: number[] = []): number[] =>
  [...Array.from({ length: Math.floor((to - from) / every) + 1 }, (_, i) => from + i * every), ...extra].sort((a, b) => a - b);

describe('steady windows of a switch’s length (bench:rebalance)', () => {
  it('counts a gap in every window it overlaps, and only those', () => {
    const s = [0, 100, 400, 450];
    expect(longestGap([s], 0, 50)).toBe(100);
    expect(longestGap([s], 150, 200)).toBe(300); // inside the 100 → 400 gap
    expect(longestGap([s], 401, 440)).toBe(50);
    expect(longestGap([s], 460, 500)).toBe(0);
    expect(longestGap([s, [0, 500]], 401, 440)).toBe(500);
  });

  it('slides windows of the given length over each period, trimmed by the margin, and none across periods', () => {
    const s = stream(0, 10_000, 50, [5025]);
    // A period [1000, 2000) with margin 100: windows start at 1100, 1150, … while they end by 1900.
    expect(steadyWindowGaps([s], [[1000, 2000]], 400, 50, 100)).toHaveLength(9);
    // The 25 ms gaps around 5025 lie between the periods: no window sees anything shorter than 50 ms… or longer.
    const gaps = steadyWindowGaps([s], [[1000, 4000], [6000, 9000]], 300, 50, 100);
    expect(gaps.length).toBe(2 * 51); // starts 1100 … 3600 and 6100 … 8600
    expect(new Set(gaps)).toEqual(new Set([50]));
    expect(() => steadyWindowGaps([s], [[0, 1]], 0, 50, 0)).toThrow(/positive/);
  });

  it('places the switch’s gap among the steady windows’ gaps: percentile, p50 / p90 / max, within p90', () => {
    const steady = Array.from({ length: 100 }, (_, i) => 100 + i); // 100 … 199
    const within = compareWithSteady(150, steady, 400, 50, 250);
    expect(within).toMatchObject({ windows: 100, p50Ms: 150, p90Ms: 190, maxMs: 199, duringMs: 150, duringPercentile: 50.5, duringWithinP90: true });
    const pause = compareWithSteady(260, steady, 400, 50, 250);
    expect(pause).toMatchObject({ duringPercentile: 100, duringWithinP90: false });
    expect(compareWithSteady(191, steady, 400, 50, 250).duringWithinP90).toBe(false);
    expect(compareWithSteady(90, [], 400, 50, 250)).toMatchObject({ windows: 0, duringPercentile: null, duringWithinP90: null });
  });

  it('finds a pause that a longer steady window would hide', () => {
    // Steady: a token every 60 ms with a 120 ms hiccup every 2 s; the switch (400 ms from 5000) has one 150 ms gap.
    const hiccups = (from: number, to: number): number[] => {
      const t: number[] = [];
      for (let x = from; x < to; x += 60) t.push(x % 2000 < 60 ? x + 60 : x);
      return [...new Set(t)];
    };
    const s = [...hiccups(0, 5000), 5000, 5060, 5210, 5270, 5330, 5390, ...hiccups(5400, 10_000).filter((x) => x > 5400)];
    const gaps = steadyWindowGaps([s], [[0, 5000], [5400, 10_000]], 400, 50, 250);
    const c = compareWithSteady(longestGap([s], 5000, 5400), gaps, 400, 50, 250);
    expect(c.duringMs).toBe(150);
    expect(c.maxMs).toBe(120); // the hiccups: some windows of 400 ms hold one, most do not
    expect(c.p50Ms).toBe(60);
    expect(c.duringWithinP90).toBe(false);
  });
});
