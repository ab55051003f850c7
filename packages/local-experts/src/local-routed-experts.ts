import type { ModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, releaseLoadBuffers, i64, weightBytes, weightFormat, type ExecutionOptions, type Tensor } from '@expertmesh/tensor-ops';
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

/** One graph over some of a layer's held experts: slots [first, first + count) of the layer's held list. */
interface ExpertGroup {
  readonly graph: Graph;
  readonly first: number;
  readonly count: number;
}

/**
 * Stored bytes of experts per graph. onnxruntime-node runs a session on the calling thread, so one
 * run blocks the event loop (gRPC keepalive pings included) for as long as it takes; widening FP8
 * on one core runs ~0.25 G parameters/s, so this keeps a run near a second at DeepSeek-R1's width
 * (6 experts of 44 MB) while a small model's layer stays one graph.
 */
export const EXPERT_GROUP_BYTES = 256 << 20;

interface LayerExperts {
  readonly groups: readonly ExpertGroup[];
  readonly held: readonly number[];
  readonly slotOf: Map<number, number>;
  /** Bytes of these experts' weights as held (stored codes and scales, or float32). */
  readonly weightBytes: number;
}

/** Runs routed experts on this machine with onnxruntime: per MoE layer, one graph per group of experts (EXPERT_GROUP_BYTES). */
export class LocalRoutedExperts implements RoutedExpertsBackend {
  private readonly observers = new DispatchObservers();

  private constructor(
    private readonly config: ModelConfig,
    private readonly layers: Map<number, LayerExperts>,
    /** The format the expert weights are held in, e.g. "float8e4m3fn+block128x128" or "float32". */
    readonly weightFormat: string,
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
    let format = reader.dtype === 'float32' ? 'float32' : '';
    for (const layer of config.moeLayers) {
      const held = [...experts(layer)].sort((a, b) => a - b);
      if (held.length === 0) continue;
      let bytes = 0;
      const groups: ExpertGroup[] = [];
      let group: { id: number; weights: Awaited<ReturnType<WeightReader['routedExpert']>> }[] = [];
      let groupBytes = 0;
      const flush = async (): Promise<void> => {
        if (group.length === 0) return;
        const name = `layer${layer}_routed_experts_${groups.length}`;
        groups.push({ graph: await Graph.create(name, buildRoutedExpertsGraph(group, config.hiddenSize, name), execution), first: groups.reduce((a, g) => a + g.count, 0), count: group.length });
        group = [];
        groupBytes = 0;
      };
      for (const id of held) {
        const w = await reader.routedExpert(layer, id);
        const expertBytes = weightBytes(w.gate) + weightBytes(w.up) + weightBytes(w.down);
        if (groupBytes + expertBytes > EXPERT_GROUP_BYTES) await flush();
        bytes += expertBytes;
        groupBytes += expertBytes;
        format ||= weightFormat(w.gate);
        group.push({ id, weights: w });
      }
      await flush();
      layers.set(layer, { groups, held, slotOf: new Map(held.map((id, i) => [id, i])), weightBytes: bytes });
    }
    await releaseLoadBuffers();
    return new LocalRoutedExperts(config, layers, format || 'none');
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

  heldWeightBytes(): number {
    return this.weightBytes;
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
    // Add each weighted expert output into its token, experts in held order (deterministic).
    const out = new Float32Array(numTokens * H);
    const x = f32(hidden, [numTokens, H]);
    for (const group of entry.groups) {
      const slotsOfGroup = Array.from({ length: group.count }, (_, i) => group.first + i);
      if (slotsOfGroup.every((s) => rows[s]!.length === 0)) continue; // no token chose these experts
      const feeds: Record<string, Tensor> = { x };
      for (const s of slotsOfGroup) {
        const id = entry.held[s]!;
        feeds[`rows_${id}`] = i64(rows[s]!, [rows[s]!.length]);
        feeds[`weights_${id}`] = f32(weights[s]!, [weights[s]!.length, 1]);
      }
      const y = floatData((await group.graph.run(feeds)).y, group.graph.name, 'y');
      let row = 0;
      for (const s of slotsOfGroup) {
        const tokenRows = rows[s]!;
        for (let k = 0; k < tokenRows.length; k++, row++) {
          const dst = Number(tokenRows[k]!) * H;
          const src = row * H;
          for (let c = 0; c < H; c++) out[dst + c] += y[src + c]!;
        }
      }
    }
    return out;
  }

  /** Bytes of expert weights held, in the format they are held in (what this process's memory grows with). */
  get weightBytes(): number {
    let bytes = 0;
    for (const e of this.layers.values()) bytes += e.weightBytes;
    return bytes;
  }

  /** Held experts per MoE layer. */
  heldLayers(): { layer: number; experts: readonly number[] }[] {
    return [...this.layers.entries()].map(([layer, e]) => ({ layer, experts: e.held }));
  }

  async close(): Promise<void> {
    for (const { groups } of this.layers.values()) for (const { graph } of groups) await graph.release();
    this.layers.clear();
  }
}
