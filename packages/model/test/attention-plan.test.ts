import { describe, expect, it } from 'vitest';
import { planAttention, type AttentionSet, type StepSegment } from '../src/attention-batch.js';
import { LatentKvCache } from '../src/kv-cache.js';

/**
 * The plan every layer's attention follows: read back from its arrays, each step row must see
 * exactly its own sequence's keys at positions 0…its own (cached ones by pool slot, this step's by
 * step row), in the output row the plan says, whatever the mix of decode tokens and chunks.
 */
describe('the attention plan of a step', () => {
  const cache = new LatentKvCache(1, 4, 16, 4);
  // Two decode tokens at different depths, then two prefill chunks of different lengths (one from 0).
  const segments: StepSegment[] = [
    { blocks: [3, 1], startPosition: 5, length: 1 },
    { blocks: [0], startPosition: 2, length: 1 },
    { blocks: [7, 2, 9], startPosition: 6, length: 4 },
    { blocks: [4], startPosition: 0, length: 2 },
  ];
  const plan = planAttention(cache, segments);

  /** Every (pool slot | step row) a query row sees, as strings, with the set row it computes. */
  const visible = (set: AttentionSet, g: number, i: number): string[] => {
    const L = set.cachedLength + set.queryLength;
    const seen: string[] = [];
    for (let k = 0; k < L; k++) {
      if (set.mask[(g * set.queryLength + i) * L + k] !== 0) continue;
      seen.push(k < set.cachedLength ? `slot ${set.cachedSlots[g * set.cachedLength + k]}` : `row ${set.rows[g * set.queryLength + k - set.cachedLength]}`);
    }
    return seen.sort();
  };

  it('lets each step row see exactly its own sequence up to its position', () => {
    let stepRow = 0;
    for (const s of segments) {
      for (let i = 0; i < s.length; i++, stepRow++) {
        const expected = [
          ...Array.from({ length: s.startPosition }, (_, p) => `slot ${cache.slotOf(s.blocks, p)}`),
          ...Array.from({ length: i + 1 }, (_, j) => `row ${stepRow - i + j}`),
        ].sort();
        const flat = plan.outputRows[stepRow]!;
        const decodeRows = plan.decode.groups * plan.decode.queryLength;
        const set = flat < decodeRows ? plan.decode : plan.chunks;
        const local = flat < decodeRows ? flat : flat - decodeRows;
        const g = Math.floor(local / set.queryLength);
        const q = local % set.queryLength;
        expect(set.rows[local]).toBe(stepRow);
        expect(visible(set, g, q)).toEqual(expected);
      }
    }
  });

  it('pads only the chunks: decode tokens are one row each', () => {
    expect([plan.decode.groups, plan.decode.queryLength, plan.decode.cachedLength]).toEqual([2, 1, 5]);
    expect([plan.chunks.groups, plan.chunks.queryLength, plan.chunks.cachedLength]).toEqual([2, 4, 6]);
    // A padded query of the short chunk sees something (no all -inf row, so no NaN), and is never output.
    expect(visible(plan.chunks, 1, 3).length).toBeGreaterThan(0);
    expect(new Set(plan.outputRows).size).toBe(8);
    expect(Array.from(plan.outputRows)).not.toContain(2 + 4 + 2);
  });

  it('leaves a set empty when the step has none of its kind', () => {
    const decodeOnly = planAttention(cache, [segments[0]!, segments[1]!]);
    expect([decodeOnly.chunks.groups, decodeOnly.chunks.queryLength, decodeOnly.chunks.rows.length]).toEqual([0, 0, 0]);
    expect(Array.from(decodeOnly.outputRows)).toEqual([0, 1]);
  });
});
