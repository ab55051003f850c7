import { describe, expect, it } from 'vitest';
import { evenSplitSpec, ExpertSpecError, parseExpertSpec, selectedExperts } from '../src/index.js';

describe('--experts spec', () => {
  it('reads lists, ranges, all, and a layer restriction', () => {
    const s = parseExpertSpec('0-3,8,10-11@3-4');
    expect(selectedExperts(s, 3, 16)).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(selectedExperts(s, 5, 16)).toEqual([]);
    expect(selectedExperts(parseExpertSpec('all'), 7, 4)).toEqual([0, 1, 2, 3]);
  });

  it('rejects malformed specs and experts the model does not have', () => {
    expect(() => parseExpertSpec('3-1')).toThrow(/runs backwards/);
    expect(() => parseExpertSpec('a')).toThrow(ExpertSpecError);
    expect(() => parseExpertSpec('1@2@3')).toThrow(/more than one @/);
    expect(() => selectedExperts(parseExpertSpec('0-20'), 1, 16)).toThrow(/expert 16 does not exist: the model has 16/);
  });

  it('splits experts evenly with nothing left over', () => {
    for (const [n, e] of [
      [1, 16],
      [3, 16],
      [4, 256],
    ] as const) {
      const held = Array.from({ length: n }, (_, i) => selectedExperts(parseExpertSpec(evenSplitSpec(i, n, e)), 0, e));
      expect(held.flat()).toEqual(Array.from({ length: e }, (_, i) => i));
      expect(Math.max(...held.map((h) => h.length)) - Math.min(...held.map((h) => h.length))).toBeLessThanOrEqual(1);
    }
  });
});
