import type { ScheduledSegment } from './scheduler.js';

/** How many micro-batches a step's batch is split into (1: no overlap; 2: ping-pong). */
export type MicroBatchCount = 1 | 2;

/**
 * Splits a step's segments into at most `count` micro-batches of whole segments (a sequence's
 * tokens of one step stay together, so no micro-batch reads cache rows another writes in the same
 * layer), balanced by tokens: longest segment first into the lightest micro-batch (ties to the
 * earlier one), each micro-batch keeping the plan's order. Returns indices into `segments`; never an
 * empty micro-batch, so a step of one segment stays one micro-batch.
 */
export function splitMicroBatches(segments: readonly Pick<ScheduledSegment, 'length'>[], count: number): number[][] {
  const n = Math.min(count, segments.length);
  if (n <= 1) return segments.length ? [segments.map((_, i) => i)] : [];
  const parts: number[][] = Array.from({ length: n }, () => []);
  const tokens = new Array<number>(n).fill(0);
  const byLength = segments.map((_, i) => i).sort((a, b) => segments[b]!.length - segments[a]!.length || a - b);
  for (const i of byLength) {
    let lightest = 0;
    for (let p = 1; p < n; p++) if (tokens[p]! < tokens[lightest]!) lightest = p;
    parts[lightest]!.push(i);
    tokens[lightest]! += segments[i]!.length;
  }
  for (const p of parts) p.sort((a, b) => a - b);
  return parts;
}
