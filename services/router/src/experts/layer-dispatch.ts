import type { ExpertRouting } from '@expertmesh/routed-experts';
import { bf16ToFloat32, float32ToBf16Bytes } from '@expertmesh/weights';
import { NoHolderError } from './dispatch-errors.js';
import type { ShardView } from './shard-source.js';

/** One row sent to a shard: a token's hidden state and some of its experts, answered by their weighted sum. */
export interface RowTask {
  readonly token: number;
  /** Ascending expert ids, and their gate weights. */
  readonly experts: readonly number[];
  readonly weights: readonly number[];
  /** Index of the shard (in the view) it goes to. */
  readonly shard: number;
  /** One expert of a group that no single usable shard holds whole: its row comes back unsummed, in float32. */
  readonly part: boolean;
  /** The answer, float32 as received, and whether it was already rounded to bfloat16 by the shard. */
  result: Float32Array | null;
  roundedToBf16: boolean;
}

/**
 * A group of one token's experts whose weighted sum enters the token's output as one term: computed
 * by one row (the group whole on one shard), or by one row per expert added up here in the order a
 * shard adds them (ascending expert id), which gives the very same float32 sum.
 */
interface Term {
  readonly token: number;
  rows: RowTask[];
}

/**
 * The work of one MoE layer in one step. Each token's experts are split into groups by the reference
 * placement (fixed: the plan, or the shard list), so that the sum of every group, and the order in
 * which the groups are added, never depend on load or on which shards are up. Each group goes to the
 * least-loaded usable shard holding all of it (one not loading a new plan first). When a shard fails, its rows move to other holders and
 * are summed in the same order. The sums are then those of the fault-free run up to the last float32
 * bits: onnxruntime's product kernel for a single row adds in another order than its batched one, and
 * moving rows changes how many rows an expert gets in a call.
 */
export class LayerDispatch {
  private readonly terms: Term[] = [];
  /** Tokens given to each shard so far (for balancing over replicas). */
  private readonly load: number[];

  private constructor(
    private readonly view: ShardView,
    private readonly layer: number,
    private readonly usable: (shard: number) => boolean,
  ) {
    this.load = new Array<number>(view.connections.length).fill(0);
  }

  /** Splits the layer's (token, expert) pairs into rows on usable shards; throws NoHolderError for an expert no usable shard holds. */
  static plan(view: ShardView, layer: number, routing: ExpertRouting, usable: (shard: number) => boolean): LayerDispatch {
    const d = new LayerDispatch(view, layer, usable);
    const { numTokens: T, topK: k } = routing;
    const reference = view.reference ?? view.placement;
    const ids = new Int32Array(k);
    const w = new Float32Array(k);
    const order = Array.from({ length: k }, (_, j) => j);
    const used: number[] = [];
    for (let t = 0; t < T; t++) {
      // The token's experts in ascending order, weights alongside.
      for (let j = 0; j < k; j++) order[j] = j;
      order.sort((a, b) => routing.expertIds[t * k + a]! - routing.expertIds[t * k + b]!);
      for (let j = 0; j < k; j++) {
        ids[j] = routing.expertIds[t * k + order[j]!]!;
        w[j] = routing.weights[t * k + order[j]!]!;
      }
      used.length = 0;
      for (const mask of reference.groupsOf(layer, ids)) {
        const experts: number[] = [];
        const weights: number[] = [];
        for (let j = 0; j < k; j++) {
          if (mask & (1 << j)) {
            experts.push(ids[j]!);
            weights.push(w[j]!);
          }
        }
        const term: Term = { token: t, rows: [] };
        term.rows = d.place(t, experts, weights, used, false);
        d.terms.push(term);
      }
    }
    return d;
  }

  /** Every row, in term order. */
  rows(): RowTask[] {
    return this.terms.flatMap((t) => t.rows);
  }

  /**
   * Moves rows whose shard failed (and is no longer usable) to other holders: a whole group to a
   * shard holding all of it, else one row per expert. Returns the new rows to send.
   */
  replace(failed: readonly RowTask[]): RowTask[] {
    const moved = this.alternatives(failed);
    this.adopt(moved);
    return [...moved.values()].flat();
  }

  /**
   * Where each of `rows` would go on other usable holders (never on `exclude`): a whole group to a
   * shard holding all of it, else one row per expert. Nothing changes until `adopt`: a hedge sends
   * these while the late call is still out, and only the answer that comes first is used.
   */
  alternatives(rows: readonly RowTask[], exclude = -1): Map<RowTask, RowTask[]> {
    return new Map(rows.map((r) => [r, this.place(r.token, r.experts, r.weights, [], r.part, exclude)]));
  }

  /** Makes each row's alternatives the ones whose results are combined (a row's result then comes from them alone). */
  adopt(alternatives: ReadonlyMap<RowTask, readonly RowTask[]>): void {
    for (const term of this.terms) {
      if (!term.rows.some((r) => alternatives.has(r))) continue;
      term.rows = term.rows.flatMap((r) => alternatives.get(r) ?? [r]);
    }
  }

  /** Whether, if `shard` failed, every expert of `rows` would have another usable holder to go to. */
  movable(rows: readonly RowTask[], shard: number): boolean {
    const placement = this.view.placement;
    return rows.every((r) => r.experts.every((e) => placement.holdersOf(this.layer, e).some((h) => h !== shard && this.usable(h))));
  }

  /**
   * Σ over each token's groups, in group order, of the group's weighted sum; with a bfloat16 combine
   * every group sum is rounded as the shard would round it.
   */
  combine(numTokens: number, hidden: number, combineDtype: 'float32' | 'bfloat16'): Float32Array {
    const out = new Float32Array(numTokens * hidden);
    const sum = new Float32Array(hidden);
    const bf16 = combineDtype === 'bfloat16';
    for (const term of this.terms) {
      let values: Float32Array;
      if (term.rows.length === 1 && !term.rows[0]!.part) {
        const row = term.rows[0]!;
        values = bf16 && !row.roundedToBf16 ? roundToBf16(row.result!) : row.result!;
      } else {
        sum.fill(0);
        for (const row of term.rows) {
          const r = row.result!;
          for (let c = 0; c < hidden; c++) sum[c] += r[c]!;
        }
        values = bf16 ? roundToBf16(sum) : sum;
      }
      const dst = term.token * hidden;
      for (let c = 0; c < hidden; c++) out[dst + c] += values[c]!;
    }
    return out;
  }

  /**
   * Rows for these experts of `token`: one on the least-loaded usable shard holding them all
   * (preferring one the token does not use yet), else one row per expert.
   */
  private place(token: number, experts: readonly number[], weights: readonly number[], used: number[], part: boolean, exclude = -1): RowTask[] {
    const placement = this.view.placement;
    let best = -1;
    for (const h of placement.holdersOf(this.layer, experts[0]!)) {
      if (h === exclude || !this.usable(h)) continue;
      if (experts.length > 1 && !experts.every((e) => placement.holdersOf(this.layer, e).includes(h))) continue;
      if (best < 0 || this.better(h, best, used)) best = h;
    }
    if (best < 0) {
      if (experts.length === 1) throw new NoHolderError(this.layer, experts[0]!);
      return experts.flatMap((e, i) => this.place(token, [e], [weights[i]!], used, true, exclude));
    }
    this.load[best]!++;
    if (!used.includes(best)) used.push(best);
    return [{ token, experts, weights, shard: best, part: part || false, result: null, roundedToBf16: false }];
  }

  /**
   * Whether holder `a` should take a row before `b`: first one that is not loading a new plan (its
   * builds and record updates can hold its answers up; the other holder serves the same experts),
   * then one the token does not use yet, then the less loaded.
   */
  private better(a: number, b: number, used: readonly number[]): boolean {
    const switching = this.view.switching;
    if (switching) {
      const sa = switching.has(a);
      if (sa !== switching.has(b)) return !sa;
    }
    const ua = used.includes(a);
    const ub = used.includes(b);
    if (ua !== ub) return ub;
    const la = this.load[a]!;
    const lb = this.load[b]!;
    return la !== lb ? la < lb : a < b;
  }
}

/** What the shard's bfloat16 encoder makes of a float32 sum, back in float32. */
function roundToBf16(values: Float32Array): Float32Array {
  const bytes = float32ToBf16Bytes(values);
  return bf16ToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, values.length));
}
