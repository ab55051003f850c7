import { describe, expect, it } from 'vitest';
import { compareConversion, describeMismatch, firstDifference } from '../../bench/conversion-check.js';

/**
 * bench:vs-llama-cpp's conversion check: llama.cpp's F32 greedy tokens against ours, prompt by prompt, with the
 * position where each first differs (the run stops on any difference before it times anything).
 */
describe('the llama.cpp conversion check', () => {
  it('passes only when every prompt continues identically', () => {
    const ours = [[5, 6, 7], [1, 2, 3]];
    const same = compareConversion(ours, [[5, 6, 7], [1, 2, 3]]);
    expect(same.passed).toBe(true);
    expect(same.identical).toBe(2);
    expect(same.prompts.map((p) => p.firstDifference)).toEqual([null, null]);
    expect(describeMismatch(same)).toBe('');

    const one = compareConversion(ours, [[5, 6, 7], [1, 9, 3]]);
    expect(one.passed).toBe(false);
    expect(one.identical).toBe(1);
    expect(one.prompts.map((p) => p.firstDifference)).toEqual([null, 1]);
  });

  it('finds the first differing position, a shorter continuation differing where it ends', () => {
    expect(firstDifference([1, 2, 3], [1, 2, 3])).toBeNull();
    expect(firstDifference([4, 2, 3], [1, 2, 3])).toBe(0);
    expect(firstDifference([1, 2, 3, 8], [1, 2, 3, 9])).toBe(3);
    expect(firstDifference([1, 2], [1, 2, 3])).toBe(2);
    expect(firstDifference([1, 2, 3], [1, 2])).toBe(2);
    expect(firstDifference([], [])).toBeNull();
  });

  it('names each differing prompt, its first differing position and the two tokens there', () => {
    const check = compareConversion([[10, 11, 12], [20, 21], [30, 31, 32]], [[10, 11, 12], [20, 27], [30, 31]]);
    const lines = describeMismatch(check).split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('prompt 1: first differs at generated token 1 (ours 21, llama.cpp 27)');
    expect(lines[1]).toContain('prompt 2: first differs at generated token 2 (ours 32, llama.cpp end)');
    expect(lines[1]).toContain('ours [30, 31, 32], llama.cpp [30, 31]');
  });

  it('refuses to compare different prompt sets or none', () => {
    expect(() => compareConversion([[1]], [[1], [2]])).toThrow(/same prompts/);
    expect(() => compareConversion([], [])).toThrow(/at least one/);
  });
});
