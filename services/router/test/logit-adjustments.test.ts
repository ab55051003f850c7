import { describe, expect, it } from 'vitest';
import { LogitBias, RepetitionPenalties } from '../src/sampling/logit-adjustments.js';

describe('logit adjustments', () => {
  it('logit_bias adds its amount to the named tokens only', () => {
    const logits = new Float32Array([1, 2, 3]);
    new LogitBias(new Map([[0, 100], [2, -5]])).process(logits);
    expect([...logits]).toEqual([101, 2, -2]);
  });

  it('presence and frequency penalties follow OpenAI: presence once, frequency per occurrence', () => {
    const p = new RepetitionPenalties(0.5, 0.25);
    for (const t of [1, 1, 2]) p.accept(t);
    const logits = new Float32Array([0, 0, 0, 0]);
    p.process(logits);
    expect([...logits]).toEqual([0, -1, -0.75, 0]);
  });
});
