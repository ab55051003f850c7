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

/** The largest logit: four running maxima, so the loop is not one long chain of dependent compares. */
function maxOf(logits: Float32Array): number {
  let m0 = -Infinity;
  let m1 = -Infinity;
  let m2 = -Infinity;
  let m3 = -Infinity;
  const n = logits.length & ~3;
  for (let i = 0; i < n; i += 4) {
    const v0 = logits[i]!;
    const v1 = logits[i + 1]!;
    const v2 = logits[i + 2]!;
    const v3 = logits[i + 3]!;
    if (v0 > m0) m0 = v0;
    if (v1 > m1) m1 = v1;
    if (v2 > m2) m2 = v2;
    if (v3 > m3) m3 = v3;
  }
  let max = Math.max(m0, m1, m2, m3);
  for (let i = n; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  return max;
}

/** The index of the largest logit, the lowest on ties (0 when none is a number). */
export function argmax(logits: Float32Array): number {
  const max = maxOf(logits);
  for (let i = 0; i < logits.length; i++) if (logits[i] === max) return i;
  return 0;
}

/**
 * Tokens are bucketed by log-weight while their weights are computed: BUCKETS buckets of equal width
 * over log-weights [-(ln V + 40), 0] (lower ones share the last). A selection then walks the buckets
 * from the top, keeps whole buckets above the one where its limit is reached without ordering them,
 * and orders only that boundary bucket's tokens.
 */
const BUCKETS = 2048;

/**
 * Scratch memory shared by every sampler: sampling is synchronous, one call at a time, so one set of
 * vocabulary-sized buffers serves all sequences instead of allocations per token.
 */
const scratch = {
  weights: new Float64Array(0),
  ids: new Int32Array(0),
  bucketOf: new Uint16Array(0),
  bucketMass: new Float64Array(BUCKETS),
  bucketCount: new Int32Array(BUCKETS),
};
function scratchFor(n: number): typeof scratch {
  if (scratch.weights.length < n) {
    scratch.weights = new Float64Array(n);
    scratch.ids = new Int32Array(n);
    scratch.bucketOf = new Uint16Array(n);
  }
  return scratch;
}

/**
 * Unnormalised probabilities exp((logit - max) / temperature) into `out`; returns their sum.
 * One pass for the max, one for the exponentials.
 */
function exponentials(logits: Float32Array, temperature: number, out: Float64Array): number {
  const max = maxOf(logits);
  const inv = 1 / temperature;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp((logits[i]! - max) * inv);
  return sum;
}

/** exponentials(), also filling the log-weight buckets of scratch. */
function bucketedExponentials(logits: Float32Array, temperature: number): number {
  const { weights, bucketOf, bucketMass, bucketCount } = scratch;
  const max = maxOf(logits);
  const inv = 1 / temperature;
  const scale = BUCKETS / (Math.log(logits.length) + 40);
  bucketMass.fill(0);
  bucketCount.fill(0);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = (logits[i]! - max) * inv;
    const w = Math.exp(x);
    weights[i] = w;
    sum += w;
    const y = -x * scale;
    const b = y < BUCKETS - 1 ? y | 0 : BUCKETS - 1;
    bucketOf[i] = b;
    bucketMass[b]! += w;
    bucketCount[b]!++;
  }
  return sum;
}

/**
 * Over all V tokens: puts into ids[0, m) the most likely tokens (weight descending, lower id on
 * ties) that reach `limit`, counted as tokens or as weight; returns m. Needs bucketedExponentials.
 */
function selectFromBuckets(V: number, limit: number, byCount: boolean): number {
  const { weights, ids, bucketOf, bucketMass, bucketCount } = scratch;
  let boundary = BUCKETS; // every bucket below it is kept whole
  let above = 0;
  let keptCount = 0;
  for (let b = 0; b < BUCKETS; b++) {
    const m = byCount ? bucketCount[b]! : bucketMass[b]!;
    if (above + m >= limit) {
      boundary = b;
      break;
    }
    above += m;
    keptCount += bucketCount[b]!;
  }
  let kept = 0;
  let tail = keptCount;
  for (let i = 0; i < V; i++) {
    const b = bucketOf[i]!;
    if (b < boundary) ids[kept++] = i;
    else if (b === boundary) ids[tail++] = i;
  }
  if (boundary === BUCKETS) return kept;
  return keptCount + selectLargest(ids.subarray(keptCount), tail - keptCount, weights, limit - above, byCount);
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
 * top-k left (renormalised).
 */
function truncate(logits: Float32Array, params: SamplingParams): { ids: Int32Array; m: number; weights: Float64Array; mass: number } {
  const V = logits.length;
  const { weights, ids } = scratchFor(V);
  const sum = bucketedExponentials(logits, params.temperature);
  let n: number;
  if (params.topK > 0 && params.topK < V) {
    n = selectFromBuckets(V, params.topK, true);
    if (params.topP < 1) {
      let base = 0;
      for (let i = 0; i < n; i++) base += weights[ids[i]!]!;
      n = selectLargest(ids, n, weights, params.topP * base, false);
    }
  } else {
    n = selectFromBuckets(V, params.topP < 1 ? params.topP * sum : Infinity, false);
  }
  let mass = 0;
  for (let i = 0; i < n; i++) mass += weights[ids[i]!]!;
  return { ids, m: n, weights, mass };
}

/** The ids sampling may draw with these parameters (kept, with a weight above 0), ascending (for tests and debugging). */
export function candidateTokens(logits: Float32Array, params: SamplingParams): number[] {
  if (params.temperature === 0) return [argmax(logits)];
  const { ids, m, weights } = truncate(logits, params);
  return Array.from(ids.subarray(0, m))
    .filter((id) => weights[id]! > 0)
    .sort((a, b) => a - b);
}

export class Sampler {
  private readonly random: SeededRandom;

  constructor(readonly params: SamplingParams) {
    this.random = new SeededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /** Draws the next token; `greedy`, when known, is the logits' argmax (the model's graph computes it). */
  sample(logits: Float32Array, greedy?: number): number {
    const { temperature, topK, topP } = this.params;
    if (temperature === 0) return greedy ?? argmax(logits);
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

/**
 * Natural-log probabilities of the full distribution (before temperature and truncation): the chosen token's and the
 * `k` largest, highest first, ties to the lower id. One pass for the normaliser and one for the `k` largest (kept
 * sorted in place, k ≤ 20 by the API): no copy or partition of the vocabulary, which is per token on the hot path.
 */
export function topLogprobs(logits: Float32Array, k: number, chosen: number): { chosen: number; top: [number, number][] } {
  const max = maxOf(logits);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  const top: [number, number][] = [];
  for (const id of largestIds(logits, Math.min(k, logits.length))) top.push([id, logits[id]! - logZ]);
  return { chosen: logits[chosen]! - logZ, top };
}

/** The ids of the `k` largest values, largest first; on ties the lower id (a later equal value never displaces). */
function largestIds(values: Float32Array, k: number): Int32Array {
  const ids = new Int32Array(Math.max(0, k));
  if (k <= 0) return ids;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (n === k && !(v > values[ids[k - 1]!]!)) continue;
    // Insert after every kept value ≥ v (equal values keep their lower ids first).
    let at = n < k ? n++ : k - 1;
    while (at > 0 && values[ids[at - 1]!]! < v) {
      ids[at] = ids[at - 1]!;
      at--;
    }
    ids[at] = i;
  }
  return ids.subarray(0, n);
}
