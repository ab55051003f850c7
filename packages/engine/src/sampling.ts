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
  let bestValue = logits[0]!;
  for (let i = 1; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/**
 * Scratch memory shared by every sampler: sampling is synchronous, one call at a time, so one
 * vocabulary-sized buffer serves all sequences instead of one allocation per token.
 */
const scratch = { weights: new Float64Array(0), ids: new Int32Array(0) };
function scratchFor(n: number): { weights: Float64Array; ids: Int32Array } {
  if (scratch.weights.length < n) {
    scratch.weights = new Float64Array(n);
    scratch.ids = new Int32Array(n);
  }
  return scratch;
}

/**
 * Unnormalised probabilities exp((logit - max) / temperature) into `out`; returns their sum.
 * One pass for the max, one for the exponentials.
 */
function exponentials(logits: Float32Array, temperature: number, out: Float64Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const inv = 1 / temperature;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp((logits[i]! - max) * inv);
  return sum;
}

/**
 * Rearranges ids[0, n) so that ids[0, m) are the most likely tokens (value descending, lower id on
 * ties) that together reach `limit`, counted as tokens (`byCount`) or as weight; returns m. A
 * three-way quickselect: expected O(n), no sort, no comparator calls, no allocation.
 */
function selectLargest(ids: Int32Array, n: number, values: Float64Array, limit: number, byCount: boolean): number {
  let lo = 0;
  let hi = n;
  let taken = 0; // measure of ids[0, lo), all kept
  while (lo < hi) {
    const pivot = medianOfThree(values[ids[lo]!]!, values[ids[(lo + hi) >>> 1]!]!, values[ids[hi - 1]!]!);
    // Partition [lo, hi) into  > pivot | == pivot | < pivot.
    let gt = lo;
    let i = lo;
    let lt = hi;
    let massGt = 0;
    let massEq = 0;
    while (i < lt) {
      const id = ids[i]!;
      const v = values[id]!;
      if (v > pivot) {
        ids[i] = ids[gt]!;
        ids[gt++] = id;
        i++;
        massGt += byCount ? 1 : v;
      } else if (v < pivot) {
        ids[i] = ids[--lt]!;
        ids[lt] = id;
      } else {
        i++;
        massEq += byCount ? 1 : v;
      }
    }
    if (taken + massGt >= limit) {
      hi = gt; // the cut lies among the larger values
    } else if (taken + massGt + massEq >= limit) {
      // The cut lies among equal values: keep the lower ids first.
      ids.subarray(gt, lt).sort();
      let m = gt;
      taken += massGt;
      for (; taken < limit && m < lt; m++) taken += byCount ? 1 : values[ids[m]!]!;
      return m;
    } else {
      taken += massGt + massEq;
      lo = lt;
    }
  }
  return lo;
}

function medianOfThree(a: number, b: number, c: number): number {
  return a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
}

/**
 * The tokens top-k then top-p keep, in no particular order, as ids[0, m) of the returned array,
 * with their unnormalised weights. As in vLLM and Hugging Face, top-p applies to the distribution
 * top-k left (renormalised). Without top-k, only tokens with p ≥ (1 − topP) / V can be in the
 * nucleus (otherwise the tokens at most as likely would hold less than 1 − topP), so only those
 * are looked at.
 */
function truncate(logits: Float32Array, params: SamplingParams): { ids: Int32Array; m: number; weights: Float64Array; mass: number } {
  const V = logits.length;
  const { weights, ids } = scratchFor(V);
  const sum = exponentials(logits, params.temperature, weights);
  const floor = params.topP < 1 && params.topK === 0 ? ((1 - params.topP) / V) * sum : 0;
  let n = 0;
  for (let i = 0; i < V; i++) if (weights[i]! >= floor) ids[n++] = i;
  if (params.topK > 0 && n > params.topK) n = selectLargest(ids, n, weights, params.topK, true);
  if (params.topP < 1) {
    // Top-p of what top-k kept, or of the whole distribution (the floor dropped only tokens it cannot need).
    let base = sum;
    if (params.topK > 0) {
      base = 0;
      for (let i = 0; i < n; i++) base += weights[ids[i]!]!;
    }
    n = selectLargest(ids, n, weights, params.topP * base, false);
  }
  let mass = 0;
  for (let i = 0; i < n; i++) mass += weights[ids[i]!]!;
  return { ids, m: n, weights, mass };
}

/** The ids sampling may draw with these parameters, ascending (for tests and debugging). */
export function candidateTokens(logits: Float32Array, params: SamplingParams): number[] {
  if (params.temperature === 0) return [argmax(logits)];
  const { ids, m } = truncate(logits, params);
  return Array.from(ids.subarray(0, m)).sort((a, b) => a - b);
}

export class Sampler {
  private readonly random: SeededRandom;

  constructor(readonly params: SamplingParams) {
    this.random = new SeededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  sample(logits: Float32Array): number {
    const { temperature, topK, topP } = this.params;
    if (temperature === 0) return argmax(logits);
    const u = this.random.next();
    if (topK === 0 && topP >= 1) {
      const weights = scratchFor(logits.length).weights;
      let left = u * exponentials(logits, temperature, weights);
      for (let i = 0; i < logits.length; i++) if ((left -= weights[i]!) < 0) return i;
      return argmax(logits);
    }
    const { ids, m, weights, mass } = truncate(logits, this.params);
    let left = u * mass;
    for (let i = 0; i < m; i++) if ((left -= weights[ids[i]!]!) < 0) return ids[i]!;
    return ids[m - 1]!;
  }
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
    const { weights, ids } = scratchFor(logits.length);
    for (let i = 0; i < logits.length; i++) {
      weights[i] = logits[i]!;
      ids[i] = i;
    }
    const m = selectLargest(ids, logits.length, weights, Math.min(k, logits.length), true);
    for (let i = 0; i < m; i++) top.push([ids[i]!, logits[ids[i]!]! - logZ]);
    top.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  }
  return { chosen: logits[chosen]! - logZ, top };
}
