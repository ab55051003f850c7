import { describe, expect, it } from 'vitest';
import { ATTENTION_SETS, planAttention, type AttentionSet, type StepSegment } from '../src/attention-batch.js';
import { LatentKvCache } from '../src/kv-cache.js';

/**
 * The plan every layer's attention follows: read back from its arrays, each step row must see
 * exactly its own sequence's keys at positions 0…its own (cached ones by pool slot, this step's by
 * step row), in the output row the plan says, whatever the mix of decode tokens and chunks.
 */
describe('the attention plan of a step', () => {
  const cache = new LatentKvCache(1, 4, 16, 4);
  // Two decode tokens at different depths, a chunk continuing a prompt, two first chunks of different lengths.
  const segments: StepSegment[] = [
    { blocks: [3, 1], startPosition: 5, length: 1 },
    { blocks: [0], startPosition: 2, length: 1 },
    { blocks: [7, 2, 9], startPosition: 6, length: 4 },
    { blocks: [4], startPosition: 0, length: 2 },
    { blocks: [5], startPosition: 0, length: 3 },
  ];
  const plan = planAttention(cache, segments);
  const T = segments.reduce((n, s) => n + s.length, 0);

  /** Every (pool slot | step row) a query row sees, as strings. */
  const visible = (set: AttentionSet, g: number, i: number): string[] => {
    const L = set.cachedLength + set.queryLength;
    const seen: string[] = [];
    for (let k = 0; k < L; k++) {
      if (set.mask[(g * set.queryLength + i) * L + k] !== 0) continue;
      seen.push(k < set.cachedLength ? `slot ${set.cachedSlots[g * set.cachedLength + k]}` : `row ${set.rows[g * set.queryLength + k - set.cachedLength]}`);
    }
    return seen.sort();
  };
  /** The set and its local row holding a flat output row. */
  const locate = (flat: number): { set: AttentionSet; local: number } => {
    let base = 0;
    for (const name of ATTENTION_SETS) {
      const set = plan.sets[name];
      const size = set.groups * set.queryLength;
      if (flat < base + size) return { set, local: flat - base };
      base += size;
    }
    throw new Error(`output row ${flat} is past every set`);
  };

  it('lets each step row see exactly its own sequence up to its position', () => {
    let stepRow = 0;
    for (const s of segments) {
      for (let i = 0; i < s.length; i++, stepRow++) {
        const expected = [
          ...Array.from({ length: s.startPosition }, (_, p) => `slot ${cache.slotOf(s.blocks, p)}`),
          ...Array.from({ length: i + 1 }, (_, j) => `row ${stepRow - i + j}`),
        ].sort();
        const { set, local } = locate(plan.outputRows[stepRow]!);
        expect(set.rows[local]).toBe(stepRow);
        expect(visible(set, Math.floor(local / set.queryLength), local % set.queryLength)).toEqual(expected);
      }
    }
  });

  it('pads decode rows to nothing, and first chunks neither to a continued chunk’s context', () => {
    const shape = (s: AttentionSet) => [s.groups, s.queryLength, s.cachedLength];
    expect(shape(plan.sets.decode)).toEqual([2, 1, 5]);
    expect(shape(plan.sets.continued_chunks)).toEqual([1, 4, 6]);
    expect(shape(plan.sets.first_chunks)).toEqual([2, 3, 0]);
    // The short first chunk's padded query sees something (no all -inf row, so no NaN), and is never output.
    expect(visible(plan.sets.first_chunks, 0, 2).length).toBeGreaterThan(0);
    expect(new Set(plan.outputRows).size).toBe(T);
    expect(Array.from(plan.outputRows)).not.toContain(2 + 2);
  });

  it('leaves a set empty when the step has none of its kind', () => {
    const decodeOnly = planAttention(cache, [segments[0]!, segments[1]!]);
    for (const name of ['first_chunks', 'continued_chunks'] as const) expect(decodeOnly.sets[name].rows.length).toBe(0);
    expect(Array.from(decodeOnly.outputRows)).toEqual([0, 1]);
  });
});
