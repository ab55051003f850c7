/** How the next token is drawn from the logits. temperature 0 means greedy. */
export interface SamplingParams {
  readonly temperature: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP (1 = off). */
  readonly topP: number;
  /** Keep only the topK most likely tokens (0 = off). */
  readonly topK: number;
  /** Seed of this request's random stream; the same seed and inputs give the same tokens. */
  readonly seed?: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0 };

/** SplitMix32-style generator: tiny, fast, and reproducible across platforms. */
export class SeededRandom {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  }
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export class Sampler {
  private readonly random: SeededRandom;

  constructor(readonly params: SamplingParams) {
    this.random = new SeededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  sample(logits: Float32Array): number {
    const { temperature, topK, topP } = this.params;
    if (temperature === 0) return argmax(logits);
    const probs = softmax(logits, temperature);
    const candidates = topK > 0 || topP < 1 ? nucleus(probs, topK, topP) : null;
    let u = this.random.next();
    if (!candidates) {
      for (let i = 0; i < probs.length; i++) if ((u -= probs[i]!) < 0) return i;
      return argmax(logits);
    }
    let mass = 0;
    for (const i of candidates) mass += probs[i]!;
    u *= mass;
    for (const i of candidates) if ((u -= probs[i]!) < 0) return i;
    return candidates[candidates.length - 1]!;
  }
}

function softmax(logits: Float32Array, temperature: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp((logits[i]! - max) / temperature);
  for (let i = 0; i < p.length; i++) p[i] = p[i]! / sum;
  return p;
}

/**
 * Token ids kept by top-k then top-p, most likely first. Only tokens with p ≥ (1-topP)/V can be in
 * the nucleus (otherwise the tokens at most as likely would hold less than 1-topP), so only those
 * are sorted.
 */
function nucleus(probs: Float64Array, topK: number, topP: number): number[] {
  const floor = topP < 1 ? (1 - topP) / probs.length : 0;
  const ids: number[] = [];
  for (let i = 0; i < probs.length; i++) if (probs[i]! >= floor) ids.push(i);
  ids.sort((a, b) => probs[b]! - probs[a]! || a - b);
  const kept = topK > 0 ? ids.slice(0, topK) : ids;
  if (topP >= 1) return kept;
  let mass = 0;
  for (let n = 0; n < kept.length; n++) {
    mass += probs[kept[n]!]!;
    if (mass >= topP) return kept.slice(0, n + 1);
  }
  return kept;
}

/** Natural-log probabilities of the full distribution (before temperature and truncation). */
export function topLogprobs(logits: Float32Array, k: number, chosen: number): { chosen: number; top: [number, number][] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  const top: [number, number][] = [];
  if (k > 0) {
    // Partial selection: keep a small sorted list of the k best.
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i]!;
      if (top.length === k && v <= top[k - 1]![1]) continue;
      let at = top.length;
      while (at > 0 && top[at - 1]![1] < v) at--;
      top.splice(at, 0, [i, v]);
      if (top.length > k) top.pop();
    }
  }
  return { chosen: logits[chosen]! - logZ, top: top.map(([id, v]) => [id, v - logZ]) };
}
