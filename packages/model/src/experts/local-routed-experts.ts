import type { ModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, i64, type ExecutionOptions, type Tensor } from '@expertmesh/tensor-ops';
import type { ExpertRouting } from '../expert-routing.js';
import { buildRoutedExpertsGraph } from '../graphs/routed-experts-graph.js';
import type { WeightReader } from '../model-weights.js';
import type { RoutedExpertsBackend } from './routed-experts-backend.js';

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

  async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    const entry = this.layers.get(layer);
    const H = this.config.hiddenSize;
    const { numTokens: T, topK: k } = routing;
    if (hidden.length !== T * H) throw new RangeError(`hidden has ${hidden.length} floats, expected ${T}×${H}`);
    if (!entry) {
      if (T * k === 0) return new Float32Array(T * H);
      throw new ExpertNotHeldError(layer, routing.expertIds[0]!);
    }
    // Bucket (token, weight) pairs by expert.
    const counts = new Int32Array(entry.held.length);
    for (let i = 0; i < T * k; i++) {
      const slot = entry.slotOf.get(routing.expertIds[i]!);
      if (slot === undefined) throw new ExpertNotHeldError(layer, routing.expertIds[i]!);
      counts[slot]!++;
    }
    const rows = entry.held.map((_, s) => new BigInt64Array(counts[s]!));
    const weights = entry.held.map((_, s) => new Float32Array(counts[s]!));
    counts.fill(0);
    for (let i = 0; i < T * k; i++) {
      const s = entry.slotOf.get(routing.expertIds[i]!)!;
      const n = counts[s]!++;
      rows[s]![n] = BigInt(Math.floor(i / k));
      weights[s]![n] = routing.weights[i]!;
    }
    const feeds: Record<string, Tensor> = { x: f32(hidden, [T, H]) };
    entry.held.forEach((id, s) => {
      feeds[`rows_${id}`] = i64(rows[s]!, [rows[s]!.length]);
      feeds[`weights_${id}`] = f32(weights[s]!, [weights[s]!.length, 1]);
    });
    const out = await entry.graph.run(feeds);
    return floatData(out.y, entry.graph.name, 'y');
  }

  async close(): Promise<void> {
    for (const { graph } of this.layers.values()) await graph.release();
    this.layers.clear();
  }
}
