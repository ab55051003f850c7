import { returnFreedHeap, returnIdleMemory, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import type { ModelConfig } from '@expertmesh/model-config';
import { releaseLoadBuffers, weightBytes, weightFormat, type ExecutionOptions } from '@expertmesh/tensor-ops';
import { DispatchObservers, routingToPairs, type DispatchObserver, type ExpertHolderState, type ExpertPairs, type ExpertRouting, type PlanStatus, type RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { checkExpertKernel, createExpertProgram, type ExpertProgram } from './expert-program.js';
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

/**
 * One program (an onnxruntime graph, or the native kernel) over some experts of a layer, in its input
 * order. After a plan change a program may be shared by the old and the new set, and may hold experts
 * the new set no longer serves: those are fed no rows (nearly free: a stored expert is guarded by "has
 * rows", the others multiply zero rows; the native kernel skips them).
 */
interface ExpertGroup {
  readonly program: ExpertProgram;
  readonly experts: readonly number[];
  /** Bytes of each expert's weights as held, in `experts` order. */
  readonly bytes: readonly number[];
}

/**
 * Stored bytes of experts per graph. onnxruntime-node runs a session on the calling thread, so one
 * run blocks the event loop (gRPC keepalive pings included) for as long as it takes; widening FP8
 * on one core runs ~0.25 G parameters/s, so this keeps a run near a second at DeepSeek-R1's width
 * (6 experts of 44 MB) while a small model's layer stays one graph.
 */
export const EXPERT_GROUP_BYTES = 256 << 20;
const NO_ROWS = new Int32Array(0);
const NO_WEIGHTS = new Float32Array(0);

/**
 * Graphs a layer may have beyond what a fresh load makes before a plan change rebuilds it whole:
 * each change that keeps graphs adds one for the experts gained, and every graph is one more
 * onnxruntime run per call.
 */
const EXTRA_GROUPS = 2;

/** Bytes of experts loaded by a plan change past which the load buffers are collected at once (see `reshaped`). */
const RELEASE_AFTER_BYTES = 256 << 20;

/**
 * Bytes of one group's weights as read past which they are collected as soon as its program holds its own copy
 * (see loadGroups): one float32 expert at R1's widths (176 MB), or a group of int8 ones.
 */
const COLLECT_GROUP_BYTES = 128 << 20;

/** Where the experts' weights come from: a checkpoint's WeightReader, or a benchmark's synthetic ones. */
export type ExpertWeightSource = Pick<WeightReader, 'expertDtype' | 'routedExpert'>;

interface LayerExperts {
  readonly groups: readonly ExpertGroup[];
  /** The experts served, ascending. */
  readonly held: readonly number[];
  readonly slotOf: Map<number, number>;
  /** Bytes of the served experts' weights as held (stored codes and scales, or float32). */
  readonly weightBytes: number;
  /** The experts of the graphs this set built (not shared with the set it was reshaped from): see warmUpBuilt. */
  readonly built: readonly number[];
  /**
   * Whether every group runs synchronously in place (`runRows`, the native kernel): then a call's outputs go to
   * the set's scratch buffer (computePairs). Fixed with the groups, which a layer's entry never changes.
   */
  readonly inPlace: boolean;
}

function layerOf(groups: readonly ExpertGroup[], held: readonly number[], built: readonly number[]): LayerExperts {
  const served = new Set(held);
  const weightBytes = groups.reduce((a, g) => a + g.bytes.reduce((b, x, i) => b + (served.has(g.experts[i]!) ? x : 0), 0), 0);
  const inPlace = groups.every((g) => g.program.runRows !== undefined);
  return { groups, held, slotOf: new Map(held.map((id, i) => [id, i])), weightBytes, built, inPlace };
}

/**
 * What a load does after each graph it builds, given how long the build held the thread (ms):
 * onnxruntime-node compiles on the calling thread, so a serving process must at least let its event
 * loop answer calls between graphs (`yieldTurn`), and may rest longer so that the load takes only a
 * share of the CPU from serving (`restAfterBuild`).
 */
export type AfterGraphBuilt = (buildMs: number) => Promise<void>;

/** One turn of the event loop: calls already received are answered before the next graph is built. */
export const yieldTurn: AfterGraphBuilt = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Rests `factor` times as long as each graph took to build, so the load uses at most 1 / (1 + factor)
 * of one core while the process serves: on cores shared with the processes that serve (the router,
 * the other shards of the host), a load that builds graph after graph takes the CPU they need.
 */
export function restAfterBuild(factor: number): AfterGraphBuilt {
  if (!(factor >= 0)) throw new RangeError(`rest factor ${factor} is not a number ≥ 0`);
  return (buildMs) => (factor === 0 ? yieldTurn(buildMs) : new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(factor * buildMs))));
}

/**
 * Loads `ids` of `layer` from the checkpoint into graphs of at most EXPERT_GROUP_BYTES each; `named` numbers them.
 * With `collectGroups`, a group of COLLECT_GROUP_BYTES or more is collected as soon as its program exists.
 */
async function loadGroups(
  config: ModelConfig,
  reader: ExpertWeightSource,
  execution: ExecutionOptions & { readonly expertKernel: ResolvedExpertKernel },
  layer: number,
  ids: readonly number[],
  named: () => string,
  afterGraph: AfterGraphBuilt,
  collectGroups: boolean,
): Promise<{ groups: ExpertGroup[]; format: string }> {
  const groups: ExpertGroup[] = [];
  let format = '';
  let group: { id: number; weights: Awaited<ReturnType<ExpertWeightSource['routedExpert']>>; bytes: number }[] = [];
  let groupBytes = 0;
  const flush = async (): Promise<void> => {
    if (group.length === 0) return;
    const name = named();
    const started = performance.now();
    const program = await createExpertProgram(name, group, config.hiddenSize, execution);
    const buildMs = performance.now() - started;
    groups.push({ program, experts: group.map((g) => g.id), bytes: group.map((g) => g.bytes) });
    const readBytes = groupBytes;
    group = [];
    groupBytes = 0;
    // The program holds its own copy now (the native kernel's storage, onnxruntime's initializers): the weights as
    // read are garbage, but V8 collects them only when it next needs to (measured at R1's widths, 32 float32 experts:
    // the load's peak 425 MiB above what it then held, the weights of 2–3 experts). Collected before the next group
    // is read (see the loop below), the load holds at most one group twice. Only in a start-up load (`load`): a forced
    // collection blocks the thread (~25 ms, see `reshaped`), which a serving shard's plan change pays once at its end.
    if (collectGroups && readBytes >= COLLECT_GROUP_BYTES) await releaseLoadBuffers();
    await afterGraph(buildMs);
  };
  /** Reads expert `id` into the group (building the group first if it would not fit); its bytes as read. */
  const add = async (id: number): Promise<number> => {
    const w = await reader.routedExpert(layer, id);
    const bytes = weightBytes(w.gate) + weightBytes(w.up) + weightBytes(w.down);
    if (groupBytes + bytes > EXPERT_GROUP_BYTES) await flush();
    groupBytes += bytes;
    format ||= weightFormat(w.gate);
    group.push({ id, weights: w, bytes });
    return bytes;
  };
  for (const id of ids) {
    const bytes = await add(id);
    // A layer's experts are all one size: when the next would not fit, the group is built (and its weights as read
    // collected) before the next expert is read, not after; only the group references them by then.
    if (groupBytes + bytes > EXPERT_GROUP_BYTES) await flush();
  }
  await flush();
  return { groups, format };
}

/** Runs routed experts on this machine: per MoE layer, one program (an onnxruntime graph, or the native kernel with `--expert-kernel native`) per group of experts (EXPERT_GROUP_BYTES). */
export class LocalRoutedExperts implements RoutedExpertsBackend {
  private readonly observers = new DispatchObservers();
  /** The in-place groups' outputs of the call being computed (computePairs), grown to the largest call's rows. */
  private yScratch = new Float32Array(0);
  private static graphNames = 0;

  private constructor(
    private readonly config: ModelConfig,
    private readonly layers: Map<number, LayerExperts>,
    /** The format the expert weights are held in, e.g. "float8e4m3fn+block128x128" or "float32". */
    readonly weightFormat: string,
    /** What runs them (--expert-kernel, `auto` decided at load). */
    readonly expertKernel: ResolvedExpertKernel = 'onnxruntime',
  ) {}

  /**
   * Loads `experts(layer)` for each MoE layer from the checkpoint (all of them by default).
   * Each layer's float32 copies are dropped once onnxruntime holds them.
   */
  static async load(
    config: ModelConfig,
    reader: ExpertWeightSource,
    execution: ExecutionOptions,
    experts: (layer: number) => readonly number[] = () => Array.from({ length: config.nRoutedExperts }, (_, i) => i),
  ): Promise<LocalRoutedExperts> {
    const { set } = await LocalRoutedExperts.empty(config, reader).build(reader, execution, experts, yieldTurn, true);
    // The quantiser's float32 temporaries and onnxruntime's copies before packing, collected and then handed back
    // to the kernel: glibc would keep their pages resident (docs/benchmarks.md, issue 13, "malloc_trim"); and V8's
    // young generation, grown by the load, shrunk (a start-up load: nothing is served yet).
    await releaseLoadBuffers();
    returnIdleMemory();
    return set;
  }

  private static empty(config: ModelConfig, reader: ExpertWeightSource): LocalRoutedExperts {
    return new LocalRoutedExperts(config, new Map(), reader.expertDtype === 'float32' ? 'float32' : '');
  }

  /**
   * Another set of experts (a new placement plan) built from this one: the graphs of experts it
   * keeps are shared, not loaded again, and only the experts it gains are read from the checkpoint
   * and compiled. A graph is shared while at least half its experts are kept (the others stay in
   * memory, fed no rows, until no set uses the graph); a layer whose graphs would pass what a fresh
   * load makes by EXTRA_GROUPS is rebuilt whole. Release this set with `close([next])` so the shared
   * graphs stay. `afterGraph` runs after each graph is built (by default one turn of the event loop;
   * a serving shard rests longer, see restAfterBuild).
   */
  async reshaped(reader: ExpertWeightSource, execution: ExecutionOptions, experts: (layer: number) => readonly number[], afterGraph: AfterGraphBuilt = yieldTurn): Promise<LocalRoutedExperts> {
    const { set, loadedBytes } = await this.build(reader, execution, experts, afterGraph);
    // Two forced full collections block a serving shard (~25 ms for a 23 MiB heap, more on a busy CPU):
    // worth it after a large load, not for a few experts, whose buffers V8 collects in its own time.
    if (loadedBytes >= RELEASE_AFTER_BYTES) {
      await releaseLoadBuffers();
      returnFreedHeap();
    }
    return set;
  }

  private async build(reader: ExpertWeightSource, execution: ExecutionOptions, experts: (layer: number) => readonly number[], afterGraph: AfterGraphBuilt = yieldTurn, collectGroups = false): Promise<{ set: LocalRoutedExperts; loadedBytes: number }> {
    const expertKernel = checkExpertKernel(execution, reader.expertDtype);
    const programs = { ...execution, expertKernel };
    const layers = new Map<number, LayerExperts>();
    let loadedBytes = 0;
    let format = this.weightFormat;
    for (const layer of this.config.moeLayers) {
      const held = [...new Set(experts(layer))].sort((a, b) => a - b);
      if (held.length === 0) continue;
      const wanted = new Set(held);
      const before = this.layers.get(layer)?.groups ?? [];
      let kept = before.filter((g) => 2 * g.experts.filter((e) => wanted.has(e)).length >= g.experts.length);
      const perExpert = Math.max(0, ...before.flatMap((g) => g.bytes));
      const freshGroups = Math.max(1, Math.ceil((held.length * perExpert) / EXPERT_GROUP_BYTES));
      const inKept = new Set(kept.flatMap((g) => g.experts));
      const missing = held.filter((e) => !inKept.has(e));
      if (missing.length > 0 && kept.length + Math.ceil((missing.length * perExpert) / EXPERT_GROUP_BYTES || 1) > freshGroups + EXTRA_GROUPS) kept = [];
      const toLoad = kept.length === 0 ? held : missing;
      const loaded = await loadGroups(this.config, reader, programs, layer, toLoad, () => `layer${layer}_routed_experts_${LocalRoutedExperts.graphNames++}`, afterGraph, collectGroups);
      format ||= loaded.format;
      loadedBytes += loaded.groups.reduce((a, g) => a + g.bytes.reduce((b, x) => b + x, 0), 0);
      layers.set(layer, layerOf([...kept, ...loaded.groups], held, loaded.groups.flatMap((g) => g.experts)));
    }
    return { set: new LocalRoutedExperts(this.config, layers, format || 'none', expertKernel), loadedBytes };
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
    // Each expert's token rows and their routing weights, in pair order.
    // (Arrays only for the chosen experts: at a decode step a few of the layer's dozens.)
    const tokenRowsOf = entry.held.map((_, s) => (counts[s] ? new Int32Array(counts[s]!) : NO_ROWS));
    const weights = entry.held.map((_, s) => (counts[s] ? new Float32Array(counts[s]!) : NO_WEIGHTS));
    const filled = new Int32Array(entry.held.length);
    for (let i = 0; i < n; i++) {
      const s = slots[i]!;
      const k = filled[s]!++;
      const row = pairs.tokenRows[i]!;
      if (row < 0 || row >= numTokens) throw new RangeError(`pair ${i} names token row ${row} of ${numTokens}`);
      tokenRowsOf[s]![k] = row;
      weights[s]![k] = pairs.weights[i]!;
    }
    // Each graph's unweighted expert outputs, then weighted and added into their tokens expert by expert
    // in ascending id (as one graph holding them all would): a token's sum never depends on how graphs
    // split. The product is rounded to float32 before the sum, as a float32 Mul would (the sum of two
    // float32 in a double rounds to the float32 sum).
    const outputs = new Array<{ y: Float32Array; at: number; program: ExpertProgram } | undefined>(entry.held.length);
    // Where every group runs synchronously in place (the native kernel), the groups' outputs go to one scratch
    // buffer reused call after call: nothing below awaits until they are added into `out`, so no other call can
    // write it meanwhile. Per-call output buffers were most of a shard's allocation outside V8's heap (issue 16).
    const { inPlace } = entry;
    let scratchAt = 0;
    if (inPlace) {
      let rowsTotal = 0;
      for (let s = 0; s < counts.length; s++) rowsTotal += counts[s]!;
      if (this.yScratch.length < rowsTotal * H) this.yScratch = new Float32Array(rowsTotal * H);
    }
    for (const group of entry.groups) {
      const slotsOfGroup = group.experts.map((id) => entry.slotOf.get(id));
      const sizes = slotsOfGroup.map((s) => (s === undefined ? 0 : counts[s]!));
      const total = sizes.reduce((a, m) => a + m, 0);
      if (total === 0) continue; // no token chose these experts
      // The group's input rows, expert after expert in graph order: read by index where the kernel can (native),
      // else gathered here (a copy of Σ M_e rows: cheaper than a Gather operator per expert).
      let y: Float32Array;
      if (inPlace && group.program.runRows) {
        const source = new Int32Array(total);
        let row = 0;
        for (const s of slotsOfGroup) if (s !== undefined) for (const token of tokenRowsOf[s]!) source[row++] = token;
        y = group.program.runRows(hidden, source, sizes, this.yScratch.subarray(scratchAt, scratchAt + total * H));
        scratchAt += total * H;
      } else {
        const x = new Float32Array(total * H);
        let row = 0;
        for (const s of slotsOfGroup) if (s !== undefined) for (const token of tokenRowsOf[s]!) x.set(hidden.subarray(token * H, (token + 1) * H), row++ * H);
        y = await group.program.run(x, sizes);
      }
      let at = 0;
      for (const s of slotsOfGroup) {
        if (s === undefined) continue;
        outputs[s] = { y, at, program: group.program };
        at += counts[s]!;
      }
    }
    const out = new Float32Array(numTokens * H);
    entry.held.forEach((_, s) => {
      const o = outputs[s];
      if (!o) return;
      const tokenRows = tokenRowsOf[s]!;
      const tokenWeights = weights[s]!;
      // The addon's add gives the same bits; for a single row the JavaScript loop costs less than the call.
      if (o.program.addWeightedRows && tokenRows.length > 1) return o.program.addWeightedRows(out, o.y, o.at, tokenRows, tokenWeights);
      for (let k = 0, src = o.at * H; k < tokenRows.length; k++, src += H) {
        const dst = tokenRows[k]! * H;
        const w = tokenWeights[k]!;
        for (let c = 0; c < H; c++) out[dst + c] += Math.fround(w * o.y[src + c]!);
      }
    });
    return out;
  }

  /**
   * Runs each graph this set built (not those it shares with the set it was reshaped from) once, on one
   * zero row per expert: a session's first run allocates and plans what later runs reuse, and in a process
   * that has answered no call yet the call path itself is not compiled either (docs/benchmarks.md, issue 16,
   * round 9: 1–6 ms per layer on a joining shard's first step, 0.2–0.5 ms after). Run before the set is
   * announced, that cost belongs to the load, not to the first call routed to the new experts.
   */
  async warmUpBuilt(): Promise<void> {
    const H = this.config.hiddenSize;
    for (const [layer, { built }] of this.layers) {
      const n = built.length;
      if (n === 0) continue;
      await this.computePairs(layer, new Float32Array(n * H), n, { tokenRows: Int32Array.from(built, (_, i) => i), expertIds: Int32Array.from(built), weights: new Float32Array(n).fill(1) });
    }
  }

  /** Bytes of expert weights held, in the format they are held in (what this process's memory grows with). */
  get weightBytes(): number {
    let bytes = 0;
    for (const e of this.layers.values()) bytes += e.weightBytes;
    return bytes;
  }

  /** The programs (onnxruntime graphs, or native kernel programs) serving `layer` (one run each per call that uses them). */
  graphsOf(layer: number): number {
    return this.layers.get(layer)?.groups.length ?? 0;
  }

  /** Held experts per MoE layer. */
  heldLayers(): { layer: number; experts: readonly number[] }[] {
    return [...this.layers.entries()].map(([layer, e]) => ({ layer, experts: e.held }));
  }

  /** Releases this set's programs, except those that a set in `keep` shares (it was reshaped from this one, or this one from it). */
  async close(keep: readonly LocalRoutedExperts[] = []): Promise<void> {
    const shared = new Set(keep.flatMap((k) => [...k.layers.values()].flatMap((l) => l.groups.map((g) => g.program))));
    for (const { groups } of this.layers.values()) for (const { program } of groups) if (!shared.has(program)) await program.release();
    this.layers.clear();
  }
}
