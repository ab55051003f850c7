import { describe, expect, it } from 'vitest';
import { argmax, Sampler, topLogprobs } from '../src/index.js';

const logits = Float32Array.from([0.5, 2.0, 1.0, -1.0, 2.0]);

describe('sampling', () => {
  it('greedy picks the highest logit, lowest index on ties', () => {
    expect(argmax(logits)).toBe(1);
    expect(new Sampler({ temperature: 0, topP: 1, topK: 0 }).sample(logits)).toBe(1);
  });

  it('the same seed gives the same draws; another seed may differ', () => {
    const draw = (seed: number): number[] => {
      const s = new Sampler({ temperature: 1, topP: 1, topK: 0, seed });
      return Array.from({ length: 50 }, () => s.sample(logits));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it('top-k 1 is greedy whatever the temperature', () => {
    const s = new Sampler({ temperature: 5, topP: 1, topK: 1, seed: 1 });
    for (let i = 0; i < 20; i++) expect(s.sample(logits)).toBe(1);
  });

  it('top-p keeps only the nucleus', () => {
    // probs ∝ e^x: tokens 1 and 4 hold most mass; top-p 0.5 keeps only one of them.
    const s = new Sampler({ temperature: 1, topP: 0.3, topK: 0, seed: 3 });
    const seen = new Set(Array.from({ length: 100 }, () => s.sample(logits)));
    expect([...seen]).toEqual([1]);
  });

  it('sampled frequencies follow the softmax', () => {
    const s = new Sampler({ temperature: 1, topP: 1, topK: 0, seed: 11 });
    const counts = new Array(5).fill(0);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
    const z = Array.from(logits).reduce((a, x) => a + Math.exp(x), 0);
    Array.from(logits).forEach((x, i) => expect(counts[i] / n).toBeCloseTo(Math.exp(x) / z, 1));
  });

  it('log-probabilities are of the full distribution, highest first', () => {
    const { chosen, top } = topLogprobs(logits, 3, 2);
    const z = Math.log(Array.from(logits).reduce((a, x) => a + Math.exp(x), 0));
    expect(chosen).toBeCloseTo(1.0 - z, 6);
    expect(top.map(([id]) => id)).toEqual([1, 4, 2]);
    expect(top[0]![1]).toBeCloseTo(2.0 - z, 6);
  });
});
