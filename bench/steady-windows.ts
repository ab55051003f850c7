/**
 * Is a switch's longest token gap longer than steady state's? A window's longest gap grows with the window's length,
 * so the switch's gap is compared with the longest gaps of steady-state windows of the same length as the switch:
 * windows slid in `stepMs` steps over the steady periods (each period trimmed by `marginMs` at both ends, so that no
 * gap reaching into an event is counted in a steady window). Gaps are counted as in the bench's windows: every gap
 * between two tokens of a stream that overlaps the window.
 *
 * Which steady periods: the nearest ones that hold 20 windows of the event's length side by side (`pool: 'nearest'`,
 * since round 12), not only the two beside the event (`'adjacent'`, rounds 6–11). Windows slid over ~20 s hold only
 * ~20 s ÷ L independent draws: for a 6.4 s switch about 3, and the "p90" of three draws is their maximum, which a
 * switch that changes nothing exceeds about one time in four (null events measured it, round 12). The same p90 on
 * enough draws means one time in ten; taking the nearest periods rather than the whole run keeps a drift of steady
 * state over a long run out of a short switch's comparison.
 */

/** One stream's token arrival times (ms, any clock shared with the periods). */
export type TokenTimes = readonly number[];
/** [start, end) in ms, on the streams' clock. */
export type Interval = readonly [number, number];
/**
 * Which steady periods an event is compared with: the nearest ones that hold `NEAREST_INDEPENDENT_WINDOWS` windows of
 * its length side by side ('nearest'), the whole run's ('run'), or only the one before it and the one after it ('adjacent').
 */
export type SteadyPool = 'nearest' | 'run' | 'adjacent';
/**
 * How many non-overlapping windows of an event's length the 'nearest' steady periods must hold: from n independent
 * draws the nearest-rank p90 is exceeded by one more draw (n − ⌊0.9 n⌋) ÷ (n + 1) of the time, 9.5 % at 20, 17 % at
 * 11, 25 % at 3 (two 10 s periods beside a 6.4 s switch).
 */
export const NEAREST_INDEPENDENT_WINDOWS = 20;

export interface SteadyComparison {
  /** The length of every steady window: the switch's own. */
  readonly windowMs: number;
  readonly stepMs: number;
  readonly marginMs: number;
  /** How many steady windows were measured (overlapping ones, so far fewer independent samples). */
  readonly windows: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly maxMs: number;
  /** The switch's longest gap. */
  readonly duringMs: number;
  /** Percent of the steady windows whose longest gap is shorter than the switch's (ties count half); null without windows. */
  readonly duringPercentile: number | null;
  /** The goal: the switch's longest gap no longer than the steady windows' p90. */
  readonly duringWithinP90: boolean | null;
}

export interface EventComparison extends SteadyComparison {
  readonly pool: SteadyPool;
  /** The periods the windows were slid over, in ms from the event. */
  readonly periodsMs: [number, number][];
  /** Steady time the windows could start in (each period less its margins), ÷ the window's length: non-overlapping draws. */
  readonly independentWindows: number;
}

/** The longest gap between two consecutive tokens of a stream that overlaps [from, to); 0 without any. */
export function longestGap(streams: readonly TokenTimes[], from: number, to: number): number {
  let longest = 0;
  for (const times of streams) {
    for (let i = 1; i < times.length; i++) {
      const gap = times[i]! - times[i - 1]!;
      if (gap > longest && times[i]! >= from && times[i - 1]! < to) longest = gap;
    }
  }
  return longest;
}

/** Nearest-rank quantile of sorted values. */
const quantileSorted = (sorted: readonly number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

/**
 * The longest gap of each window [first + k·step, first + k·step + length) for k = 0 … count − 1, as `longestGap`
 * counts it, in one pass: each gap overlaps a run of consecutive windows, and the longest gaps claim their windows first.
 */
function slidWindowGaps(streams: readonly TokenTimes[], first: number, count: number, length: number, step: number): number[] {
  const longest = new Array<number>(count).fill(0);
  if (count <= 0) return [];
  const last = first + (count - 1) * step;
  const spans: [number, number, number][] = [];
  for (const times of streams) {
    for (let i = 1; i < times.length; i++) {
      const start = times[i - 1]!;
      const end = times[i]!;
      if (end < first || start >= last + length) continue;
      // Window k overlaps the gap iff first + k·step ≤ end and first + k·step + length > start.
      let lo = Math.max(0, Math.floor((start - length - first) / step) + 1);
      while (lo > 0 && first + (lo - 1) * step + length > start) lo--;
      while (lo < count && first + lo * step + length <= start) lo++;
      let hi = Math.min(count - 1, Math.floor((end - first) / step));
      while (hi < count - 1 && first + (hi + 1) * step <= end) hi++;
      while (hi >= 0 && first + hi * step > end) hi--;
      if (lo <= hi) spans.push([end - start, lo, hi]);
    }
  }
  spans.sort((a, b) => b[0] - a[0]);
  // next[k]: the first window at or after k that no longer gap has claimed (path-halving union-find).
  const next = Array.from({ length: count + 1 }, (_, k) => k);
  const find = (k: number): number => {
    while (next[k] !== k) {
      next[k] = next[next[k]!]!;
      k = next[k]!;
    }
    return k;
  };
  for (const [gap, lo, hi] of spans) {
    for (let k = find(lo); k <= hi; k = find(k + 1)) {
      longest[k] = gap;
      next[k] = k + 1;
    }
  }
  return longest;
}

/**
 * The longest gaps of every steady window of `windowMs` that fits, `stepMs` apart, in one of `periods` (each
 * [start, end) shrunk by `marginMs` at both ends).
 */
export function steadyWindowGaps(
  streams: readonly TokenTimes[],
  periods: readonly Interval[],
  windowMs: number,
  stepMs: number,
  marginMs: number,
): number[] {
  if (!(windowMs > 0) || !(stepMs > 0)) throw new Error(`steady windows need a positive length and step, not ${windowMs} and ${stepMs}`);
  const gaps: number[] = [];
  for (const [start, end] of periods) {
    const first = start + marginMs;
    const count = first + windowMs <= end - marginMs ? Math.floor((end - marginMs - windowMs - first) / stepMs) + 1 : 0;
    gaps.push(...slidWindowGaps(streams, first, count, windowMs, stepMs));
  }
  return gaps;
}

/** Where a switch's longest gap `duringMs` falls among the steady windows' longest gaps. */
export function compareWithSteady(duringMs: number, steadyGaps: readonly number[], windowMs: number, stepMs: number, marginMs: number): SteadyComparison {
  const sorted = [...steadyGaps].sort((a, b) => a - b);
  const below = sorted.filter((g) => g < duringMs).length;
  const ties = sorted.filter((g) => g === duringMs).length;
  const p90 = quantileSorted(sorted, 0.9);
  const round = (x: number): number => Math.round(x * 10) / 10;
  return {
    windowMs: Math.round(windowMs),
    stepMs,
    marginMs,
    windows: sorted.length,
    p50Ms: round(quantileSorted(sorted, 0.5)),
    p90Ms: round(p90),
    maxMs: round(sorted.at(-1) ?? 0),
    duringMs: round(duringMs),
    duringPercentile: sorted.length ? round((100 * (below + ties / 2)) / sorted.length) : null,
    duringWithinP90: sorted.length ? duringMs <= p90 : null,
  };
}

/** Steady state: [from, to) less every event's interval (events may overlap, as the join's two starts do). */
export function steadyPeriods(events: readonly Interval[], from: number, to: number): [number, number][] {
  const periods: [number, number][] = [];
  let steadyFrom = from;
  for (const [at, switchedAt] of [...events].sort((a, b) => a[0] - b[0])) {
    if (at > steadyFrom) periods.push([steadyFrom, Math.min(at, to)]);
    steadyFrom = Math.max(steadyFrom, switchedAt);
  }
  if (to > steadyFrom) periods.push([steadyFrom, to]);
  return periods.filter(([a, b]) => b > a);
}

/**
 * One event's longest gap against windows of its own length slid over `pool`'s steady periods: all of `periods`
 * ('run') or the last one ending by the event and the first one starting after its switch ('adjacent').
 */
export function compareEvent(
  streams: readonly TokenTimes[],
  periods: readonly Interval[],
  [at, switchedAt]: Interval,
  pool: SteadyPool,
  stepMs: number,
  marginMs: number,
): EventComparison {
  const length = switchedAt - at;
  const room = (ps: readonly Interval[]): number => ps.reduce((sum, [a, b]) => sum + Math.max(0, b - a - 2 * marginMs), 0);
  const used =
    pool === 'run'
      ? [...periods]
      : pool === 'adjacent'
        ? [periods.filter(([, end]) => end <= at).at(-1), periods.find(([start]) => start >= switchedAt)].filter((p) => p !== undefined)
        : nearestPeriods(periods, [at, switchedAt], (ps) => room(ps) >= NEAREST_INDEPENDENT_WINDOWS * length);
  const steady = steadyWindowGaps(streams, used, length, stepMs, marginMs);
  return {
    pool,
    ...compareWithSteady(longestGap(streams, at, switchedAt), steady, length, stepMs, marginMs),
    periodsMs: used.map(([from, to]) => [Math.round(from - at), Math.round(to - at)]),
    independentWindows: Math.round((room(used) / length) * 10) / 10,
  };
}

/** `periods` nearest to `event` first (by the time between them), as few as make `enough` hold (all if none do), in time order. */
function nearestPeriods(periods: readonly Interval[], [at, switchedAt]: Interval, enough: (ps: readonly Interval[]) => boolean): Interval[] {
  const distance = ([a, b]: Interval): number => (b <= at ? at - b : a >= switchedAt ? a - switchedAt : 0);
  const byDistance = [...periods].sort((x, y) => distance(x) - distance(y));
  const used: Interval[] = [];
  for (const p of byDistance) {
    if (enough(used)) break;
    used.push(p);
  }
  return used.sort((x, y) => x[0] - y[0]);
}
