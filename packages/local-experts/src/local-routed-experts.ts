import type { ModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, i64, type ExecutionOptions, type Tensor } from '@expertmesh/tensor-ops';
import { DispatchObservers, routingToPairs, type DispatchObserver, type ExpertHolderState, type ExpertPairs, type ExpertRouting, type PlanStatus, type RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { buildRoutedExpertsGraph } from './routed-experts-graph.js';
import type { WeightReader } from '@expertmesh/model-weights';

export class ExpertNotHeldError extends Error {
  override readonly name = 'ExpertNotHeldError';
  constructor(
    readonly layer: number,
    readonly expert: number,
  ) {
    super(`expert ${expert} of layer ${layer} is not held here: route it to a process that holds it`);
  }
}

interface LayerExperts {
  readonly graph: Graph;
  readonly held: readonly number[];
  readonly slotOf: Map<number, number>;
}

/** Runs routed experts on this machine with onnxruntime: one graph per MoE layer. */
export class LocalRoutedExperts implements RoutedExpertsBackend {
  private readonly observers = new DispatchObservers();

  private constructor(
    private readonly config: ModelConfig,
    private readonly layers: Map<number, LayerExperts>,
  ) {}

  /**
   * Loads `experts(layer)` for each MoE layer from the checkpoint (all of them by default).
   * Each layer's float32 copies are dropped once onnxruntime holds them.
   */
  static async load(
    config: ModelConfig,
    reader: WeightReader,
    execution: ExecutionOptions,
    experts: (layer: number) => readonly number[] = () => Array.from({ length: config.nRoutedExperts }, (_, i) => i),
  ): Promise<LocalRoutedExperts> {
    const layers = new Map<number, LayerExperts>();
    for (const layer of config.moeLayers) {
      const held = [...experts(layer)].sort((a, b) => a - b);
      if (held.length === 0) continue;
      const weights = [];
      for (const id of held) weights.push({ id, weights: await reader.routedExpert(layer, id) });
      const name = `layer${layer}_routed_experts`;
      const graph = await Graph.create(name, buildRoutedExpertsGraph(weights, config.hiddenSize, name), execution);
      layers.set(layer, { graph, held, slotOf: new Map(held.map((id, i) => [id, i])) });
    }
    return new LocalRoutedExperts(config, layers);
  }

  heldExperts(layer: number): readonly number[] {
    return this.layers.get(layer)?.held ?? [];
  }

  compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    this.observers.routing(layer, routing);
    return this.computePairs(layer, hidden, routing.numTokens, routingToPairs(routing));
  }

  observe(observer: DispatchObserver): () => void {
    return this.observers.add(observer);
  }

  /** Every expert loaded is here: always ready. */
  async notReadyReason(): Promise<string | null> {
    return null;
  }

  /** No holder elsewhere: the experts run in this process. */
  async holders(): Promise<readonly ExpertHolderState[]> {
    return [];
  }

  planStatus(): PlanStatus | null {
    return null;
  }

  /** Whether this process holds `expert` of `layer`. */
  holds(layer: number, expert: number): boolean {
    return this.layers.get(layer)?.slotOf.has(expert) ?? false;
  }

  /**
   * out[row] = Σ weight · Expert(hidden[row]) over the pairs naming that row; [numTokens, hidden].
   * Every pair's expert must be held here.
   */
  async computePairs(layer: number, hidden: Float32Array, numTokens: number, pairs: ExpertPairs): Promise<Float32Array> {
    const H = this.config.hiddenSize;
    if (hidden.length !== numTokens * H) throw new RangeError(`hidden has ${hidden.length} floats, expected ${numTokens}×${H}`);
    const n = pairs.expertIds.length;
    const entry = this.layers.get(layer);
    if (!entry) {
      if (n === 0) return new Float32Array(numTokens * H);
      throw new ExpertNotHeldError(layer, pairs.expertIds[0]!);
    }
    // Bucket pairs by expert so each expert's rows go through its weights in one matmul.
    const counts = new Int32Array(entry.held.length);
    const slots = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const slot = entry.slotOf.get(pairs.expertIds[i]!);
      if (slot === undefined) throw new ExpertNotHeldError(layer, pairs.expertIds[i]!);
      slots[i] = slot;
      counts[slot]!++;
    }
    const rows = entry.held.map((_, s) => new BigInt64Array(counts[s]!));
    const weights = entry.held.map((_, s) => new Float32Array(counts[s]!));
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const s = slots[i]!;
      const k = counts[s]!++;
      rows[s]![k] = BigInt(pairs.tokenRows[i]!);
      weights[s]![k] = pairs.weights[i]!;
    }
    const feeds: Record<string, Tensor> = { x: f32(hidden, [numTokens, H]) };
    entry.held.forEach((id, s) => {
      feeds[`rows_${id}`] = i64(rows[s]!, [rows[s]!.length]);
      feeds[`weights_${id}`] = f32(weights[s]!, [weights[s]!.length, 1]);
    });
    const result = await entry.graph.run(feeds);
    const y = floatData(result.y, entry.graph.name, 'y');
    // Add each weighted expert output into its token, experts in held order (deterministic).
    const out = new Float32Array(numTokens * H);
    let row = 0;
    for (const tokenRows of rows) {
      for (let k = 0; k < tokenRows.length; k++, row++) {
        const dst = Number(tokenRows[k]!) * H;
        const src = row * H;
        for (let c = 0; c < H; c++) out[dst + c] += y[src + c]!;
      }
    }
    return out;
  }

  /** Float32 bytes of expert weights held (what this process's memory grows with). */
  get weightBytes(): number {
    let experts = 0;
    for (const e of this.layers.values()) experts += e.held.length;
    return experts * 3 * this.config.hiddenSize * this.config.moeIntermediateSize * 4;
  }

  /** Held experts per MoE layer. */
  heldLayers(): { layer: number; experts: readonly number[] }[] {
    return [...this.layers.entries()].map(([layer, e]) => ({ layer, experts: e.held }));
  }

  async close(): Promise<void> {
    for (const { graph } of this.layers.values()) await graph.release();
    this.layers.clear();
  }
}
