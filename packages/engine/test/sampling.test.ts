import { describe, expect, it } from 'vitest';
import { argmax, candidateTokens, Sampler, topLogprobs, type SamplingParams } from '../src/index.js';

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

  it('the k largest log-probabilities equal a full sort of the vocabulary (ties to the lower id)', () => {
    let state = 7;
    const next = (): number => ((state = (state * 1103515245 + 12345) >>> 0) % 1000) / 100;
    for (const [vocab, k] of [[1, 1], [5, 20], [300, 1], [300, 7], [4096, 20]] as const) {
      // Few distinct values, so ties are common.
      const logits = Float32Array.from({ length: vocab }, () => Math.round(next()) - 5);
      const z = Math.log(Array.from(logits).reduce((a, x) => a + Math.exp(x), 0));
      const order = Array.from(logits, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
      const { top } = topLogprobs(logits, k, 0);
      expect(top.map(([id]) => id)).toEqual(order.slice(0, k));
      top.forEach(([id, lp]) => expect(lp).toBeCloseTo(logits[id]! - z, 6));
    }
  });

  it('top-k and top-p keep exactly the tokens a sort-based reference keeps (ties to the lower id)', () => {
    // The reference: softmax, sort by probability (lower id on ties), top-k, renormalise, smallest prefix reaching top-p.
    const reference = (logits: Float32Array, p: SamplingParams): number[] => {
      const max = Math.max(...logits);
      const w = Array.from(logits, (l) => Math.exp((l - max) / p.temperature));
      let order = w.map((_, i) => i).sort((a, b) => w[b]! - w[a]! || a - b);
      if (p.topK > 0) order = order.slice(0, p.topK);
      order = order.filter((i) => w[i]! > 0);
      if (p.topP >= 1) return order.sort((a, b) => a - b);
      const total = order.reduce((a, i) => a + w[i]!, 0);
      let mass = 0;
      const kept: number[] = [];
      for (const i of order) {
        if (mass >= p.topP * total) break;
        kept.push(i);
        mass += w[i]!;
      }
      return kept.sort((a, b) => a - b);
    };
    let seed = 5;
    const rand = (): number => ((seed = (seed * 48271) % 2147483647) / 2147483647);
    for (let trial = 0; trial < 80; trial++) {
      const V = [7, 100, 3000, 20000][trial % 4]!;
      // Rounded logits make ties common; some masked to -inf as a grammar does; a few far apart.
      const logits = Float32Array.from({ length: V }, () => {
        const r = rand();
        return r < 0.1 ? -Infinity : r > 0.999 ? 30 + r : Math.round(rand() * 40) / 8 - (r < 0.3 ? 60 : 0);
      });
      const params = { temperature: [0.5, 1, 2][trial % 3]!, topK: [0, 1, 5, 50][trial % 4]!, topP: [1, 0.9, 0.5, 0.05][(trial >> 2) % 4]! };
      expect(candidateTokens(logits, params), JSON.stringify(params)).toEqual(reference(logits, params));
    }
  });

  it('draws only among the candidates, in proportion to their probability', () => {
    const logits = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
    const params = { temperature: 0.7, topP: 0.6, topK: 40, seed: 3 };
    const allowed = new Set(candidateTokens(logits, params));
    const s = new Sampler(params);
    const counts = new Map<number, number>();
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const t = s.sample(logits);
      expect(allowed.has(t)).toBe(true);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    const w = [...allowed].map((i) => Math.exp(logits[i]! / 0.7));
    const z = w.reduce((a, b) => a + b, 0);
    [...allowed].forEach((id, j) => expect((counts.get(id) ?? 0) / n).toBeCloseTo(w[j]! / z, 1));
  });
});
