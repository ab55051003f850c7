/**
 * Is a switch's longest token gap longer than steady state's? A window's longest gap grows with the window's length,
 * so the switch's gap is compared with the longest gaps of steady-state windows of the same length as the switch:
 * windows slid in `stepMs` steps over the steady periods around it (each period trimmed by `marginMs` at both ends,
 * so that no gap reaching into an event is counted in a steady window). Gaps are counted as in the bench's windows:
 * every gap between two tokens of a stream that overlaps the window.
 */

/** One stream's token arrival times (ms, any clock shared with the periods). */
export type TokenTimes = readonly number[];

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
 * The longest gaps of every steady window of `windowMs` that fits, `stepMs` apart, in one of `periods` (each
 * [start, end) shrunk by `marginMs` at both ends).
 */
export function steadyWindowGaps(
  streams: readonly TokenTimes[],
  periods: readonly (readonly [number, number])[],
  windowMs: number,
  stepMs: number,
  marginMs: number,
): number[] {
  if (!(windowMs > 0) || !(stepMs > 0)) throw new Error(`steady windows need a positive length and step, not ${windowMs} and ${stepMs}`);
  const gaps: number[] = [];
  for (const [start, end] of periods) {
    for (let from = start + marginMs; from + windowMs <= end - marginMs; from += stepMs) gaps.push(longestGap(streams, from, from + windowMs));
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
