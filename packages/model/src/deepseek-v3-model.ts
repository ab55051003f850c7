import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { attentionSoftmaxScale, loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { returnIdleMemory, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, releaseLoadBuffers, f32, floatData, Graph, i32, i64, int32Data, weightBytes, type ExecutionOptions, type Tensor, type WeightData } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { ATTENTION_SETS, planAttention, type AttentionPlan, type StepSegment } from './attention-batch.js';
import type { ExpertRouting, RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { buildEmbeddingGraph } from './graphs/embedding-graph.js';
import { buildLayerGraph } from './graphs/layer-graph.js';
import { buildMlpGraph } from './graphs/mlp-graph.js';
import { HeldFormatsCollector, type HeldFormats } from './held-formats.js';
import type { LatentKvCache } from './kv-cache.js';
import { createLmHead, type LmHead } from './lm-head.js';
import { denseFfnOnNative, NativeFfn } from './native-ffn.js';
import { NativeRouter } from './native-router.js';
import { WeightReader, type LayerWeights, type WeightDtype, type WeightFormats } from '@expertmesh/model-weights';
import { RotaryTable } from './rotary-table.js';
import { tracer } from './tracer.js';

/** What a forward pass returns for the segments that wanted logits, in segment order. */
export interface ForwardResult {
  readonly logits: readonly Float32Array[];
  /** Each row's largest logit's index, lowest on ties (computed in the graph): the greedy token. */
  readonly argmax: Int32Array;
}

/** One sequence's share of a step: `tokenIds` at positions startPosition…, its cache blocks already cover them. */
export interface ForwardSegment extends StepSegment {
  readonly tokenIds: ArrayLike<number>;
  /** Whether the step should return logits for this segment's last token. */
  readonly wantLogits: boolean;
}

export interface ModelLoadOptions {
  readonly execution?: ExecutionOptions;
  /** Where the routed experts run, built beforehand. Once the load succeeds the model owns it (close() closes it). */
  readonly experts: RoutedExpertsBackend;
  /**
   * The format weights are held in: the checkpoint's own (`auto`, the default), float32, int8 or int4, for every
   * part, or one per part (WeightFormats; the routed experts' entry is not read here: they come built in `experts`).
   */
  readonly weightDtype?: WeightDtype | WeightFormats;
  /**
   * Where a MoE layer's shared expert runs: in the layer's own run (`in-layer`, the default: one run
   * less per layer, and no second session contending for the cores with in-process routed experts), or
   * in a run of its own while the routed experts compute (`beside-routed`: for routed experts on other
   * machines, whose round trip it then hides).
   */
  readonly sharedExperts?: SharedExpertsPlacement;
}

export type SharedExpertsPlacement = 'in-layer' | 'beside-routed';

interface LayerGraphs {
  /**
   * Attention (input, core over the cache, output), the dense MLP or the gate (and `in-layer`, the shared expert): one
   * run a layer. Without the dense MLP or the shared expert when those run on the native kernel (`ffn`).
   */
  readonly layer: Graph;
  /** The dense MLP (dense layers) or the shared expert (MoE layers) on the native kernel, when it runs there. */
  readonly ffn: NativeFfn | null;
  /** MoE layers whose FFN runs natively: the gate on the native kernel and noaux_tc in JavaScript, when it can run there. */
  readonly router: NativeRouter | null;
  /** MoE layers only: the shared expert, if the model has one and it runs beside the routed experts. */
  readonly moe: { readonly shared: Graph | null } | null;
}

/**
 * DeepSeek-V3 inference, one step at a time over any mix of prefill chunks and decode tokens:
 *   x = embed(tokens)
 *   per layer:  x = x + MLA(RMSNorm(x));  x = x + FFN(RMSNorm(x))   (FFN = dense MLP or MoE)
 *   logits = lm_head(RMSNorm(x)) at the rows that need a next token
 */
export class DeepseekV3Model {
  private constructor(
    readonly config: ModelConfig,
    private readonly embedding: Graph,
    private readonly layers: readonly LayerGraphs[],
    private readonly lmHead: LmHead,
    private readonly rotary: RotaryTable,
    readonly experts: RoutedExpertsBackend,
    /** Bytes of the weights the model holds (dense part, LM head, embeddings; routed experts apart), as held. */
    readonly denseWeightBytes: number,
    /** The formats the model's own weights are held in, part by part (read from the weights loaded). */
    readonly heldFormats: HeldFormats,
  ) {}

  static async load(modelDir: string, options: ModelLoadOptions): Promise<DeepseekV3Model> {
    const model = await DeepseekV3Model.build(modelDir, options);
    // The weights' JavaScript copies and the graphs' model bytes are garbage now (out of build's scope); then
    // the heap pages they and onnxruntime's pre-packing freed go back to the kernel (glibc would keep them), and
    // V8's young generation, grown by the load, is shrunk.
    await releaseLoadBuffers();
    returnIdleMemory();
    return model;
  }

  private static async build(modelDir: string, options: ModelLoadOptions): Promise<DeepseekV3Model> {
    const config = await loadModelConfig(modelDir);
    const execution = options.execution ?? DEFAULT_EXECUTION;
    const checkpoint = await SafetensorsCheckpoint.open(modelDir);
    try {
      const reader = new WeightReader(checkpoint, config, options.weightDtype ?? 'auto');
      const scale = attentionSoftmaxScale(config);
      const sharedInLayer = (options.sharedExperts ?? 'in-layer') === 'in-layer';
      const layers: LayerGraphs[] = [];
      let denseBytes = 0;
      const held = new HeldFormatsCollector();
      for (let l = 0; l < config.numLayers; l++) {
        const w = await reader.layer(l);
        denseBytes += layerWeightBytes(w);
        held.addLayer(w);
        const ffnWeights = w.ffn.kind === 'dense' ? w.ffn.mlp : w.ffn.shared;
        const ffn = ffnWeights && denseFfnOnNative(execution, ffnWeights) ? NativeFfn.create(`layer${l}_${w.ffn.kind === 'dense' ? 'mlp' : 'shared_experts'}`, ffnWeights, execution) : null;
        const router = w.ffn.kind === 'moe' && ffn ? NativeRouter.create(`layer${l}_gate`, w.ffn.router, config, execution) : null;
        layers.push({
          layer: await Graph.create(`layer${l}`, buildLayerGraph(config, w, scale, l, !ffn && (w.ffn.kind === 'dense' || sharedInLayer), !router), execution),
          ffn,
          router,
          moe:
            w.ffn.kind === 'moe'
              ? {
                  shared: w.ffn.shared && !sharedInLayer && !ffn ? await Graph.create(`layer${l}_shared_experts`, buildMlpGraph(w.ffn.shared, `layer${l}_shared_experts`), execution) : null,
                }
              : null,
        });
      }
      const finalNorm = await reader.finalNorm();
      const lmHeadWeight = await reader.lmHead();
      const embeddingWeight = await reader.embedding();
      denseBytes += finalNorm.byteLength + weightBytes(lmHeadWeight) + weightBytes(embeddingWeight);
      held.add('lmHead', lmHeadWeight);
      held.add('embedding', embeddingWeight);
      const lmHead = await createLmHead(config, finalNorm, lmHeadWeight, execution);
      const embedding = await Graph.create('embedding', buildEmbeddingGraph(embeddingWeight), execution);
      return new DeepseekV3Model(config, embedding, layers, lmHead, new RotaryTable(config), options.experts, denseBytes, held.result());
    } finally {
      await checkpoint.close();
    }
  }

  /**
   * Runs one batch through the model and returns the logits [vocab] of the last token of each
   * segment that wants them, in segment order.
   *
   * What it touches: it writes the cache rows of exactly the segments' positions
   * [startPosition, startPosition + length), at the slots their blocks give, and reads rows only below
   * each segment's end (written before, or earlier in this same call). It changes nothing else: no
   * segment, no block list, no other row. So a call that fails part-way leaves only rows at positions
   * the caller has not counted as computed, and running the same positions again rewrites them before
   * any read: the caller can retry the batch as long as it commits nothing of a failed one.
   */
  async forward(segments: readonly ForwardSegment[], cache: LatentKvCache): Promise<ForwardResult> {
    return (await this.forwardMicroBatches([segments], cache))[0]!;
  }

  /**
   * Runs several micro-batches (disjoint sequences) of one step as a ping-pong pipeline: each goes
   * through the layers on its own, so while one micro-batch's routed experts are away (on shards),
   * this process computes another's attention and gate. Every row's math is what `forward` does
   * for it; returns each micro-batch's logits as `forward` would. Same contract on the cache.
   */
  async forwardMicroBatches(microBatches: readonly (readonly ForwardSegment[])[], cache: LatentKvCache): Promise<ForwardResult[]> {
    const live = microBatches.map((segments, index) => ({ segments, index })).filter((m) => m.segments.length > 0);
    const results: ForwardResult[] = microBatches.map(() => ({ logits: [], argmax: new Int32Array(0) }));
    const parent = context.active();
    const pipelined = live.length > 1;
    await Promise.all(
      live.map(async ({ segments, index }) => {
        const span = pipelined ? tracer().startSpan('expertmesh.model.micro_batch', { attributes: { 'expertmesh.micro_batch': index, 'expertmesh.tokens': segments.reduce((a, s) => a + s.length, 0) } }, parent) : null;
        try {
          results[index] = await context.with(span ? trace.setSpan(parent, span) : parent, () => this.runPipeline(segments, cache, pipelined));
        } catch (e) {
          span?.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
          throw e;
        } finally {
          span?.end();
        }
      }),
    );
    return results;
  }

  /** One micro-batch through every layer: embed, per layer attention then FFN, LM head. */
  private async runPipeline(segments: readonly ForwardSegment[], cache: LatentKvCache, traced: boolean): Promise<ForwardResult> {
    const H = this.config.hiddenSize;
    // Decode tokens first (the attention plan's decode set).
    const order = segments.map((_, i) => i).sort((a, b) => Number(segments[a]!.length !== 1) - Number(segments[b]!.length !== 1));
    const ordered = order.map((i) => segments[i]!);
    const T = ordered.reduce((n, s) => n + s.length, 0);
    const tokens = new Int32Array(T);
    const positions = new Int32Array(T);
    const slots = new Int32Array(T);
    let t = 0;
    for (const s of ordered) {
      for (let i = 0; i < s.length; i++, t++) {
        tokens[t] = this.checkToken(s.tokenIds[i]!);
        positions[t] = s.startPosition + i;
        slots[t] = cache.slotOf(s.blocks, s.startPosition + i);
      }
    }
    const { cos, sin } = this.rotary.forPositions(positions);
    const stepFeeds = { cos: f32(cos, [T, this.rotary.pairs]), sin: f32(sin, [T, this.rotary.pairs]), ...attentionFeeds(planAttention(cache, ordered)) };

    let x = await this.embed(tokens);
    for (let l = 0; l < this.layers.length; l++) {
      const { layer, ffn, router, moe } = this.layers[l]!;
      // A span over this process's own work of the layer, so a waterfall shows micro-batches interleave.
      const span = traced ? tracer().startSpan('expertmesh.model.attention', { attributes: { 'expertmesh.layer': l } }) : null;
      const pool = cache.pools[l]!;
      // The pool holds earlier steps' rows only; the graph reads this step's from itself, then they are stored.
      const o = await layer.run({ ...stepFeeds, x: f32(x, [T, H]), pool: f32(pool, [pool.length / cache.rowSize, cache.rowSize]) });
      cache.write(l, slots, floatData(o.kv, layer.name, 'kv'));
      span?.end();
      if (moe) x = await this.moe(l, moe.shared ?? ffn, router, layer.name, o, T);
      else if (ffn) x = addRows(floatData(o.h, layer.name, 'h'), ffn.run(floatData(o.hn, layer.name, 'hn'), T));
      else x = floatData(o.x_out, layer.name, 'x_out');
    }
    return this.logits(ordered, order, x);
  }

  /**
   * x' = h + Σ routed experts + shared experts, with the routing the layer's graph chose; the shared
   * expert is in h already, or runs while the routed ones are away: `beside-routed` as a graph of its own,
   * or on the native kernel (then in either placement).
   */
  private async moe(layerIndex: number, shared: Graph | NativeFfn | null, router: NativeRouter | null, name: string, o: Record<string, Tensor>, T: number): Promise<Float32Array> {
    const h = floatData(o.h, name, 'h');
    const hn = floatData(o.hn, name, 'hn');
    const routing: ExpertRouting = router
      ? router.route(hn, T)
      : { numTokens: T, topK: this.config.numExpertsPerTok, expertIds: int32Data(o.expert_ids, name, 'expert_ids'), weights: floatData(o.expert_weights, name, 'expert_weights') };
    const routedCall = this.experts.compute(layerIndex, hn, routing);
    let nativeShared: Float32Array | null = null;
    if (shared instanceof NativeFfn) {
      try {
        // Synchronous on this thread, after the routed experts' dispatch: on shards they are away meanwhile.
        nativeShared = shared.run(hn, T);
      } catch (e) {
        await routedCall.catch(() => undefined);
        throw e;
      }
    }
    const [routed, sharedOut] = await Promise.all([
      routedCall,
      shared instanceof Graph ? shared.run({ x: f32(hn, [T, this.config.hiddenSize]) }).then((r) => floatData(r.y, shared.name, 'y')) : nativeShared,
    ]);
    // (h + shared) rounded to float32 first, as the layer's graph adds them in `in-layer`: both placements give the same bits.
    if (sharedOut) for (let i = 0; i < h.length; i++) h[i] = Math.fround(h[i]! + sharedOut[i]!) + routed[i]!;
    else for (let i = 0; i < h.length; i++) h[i]! += routed[i]!;
    return h;
  }

  private async logits(ordered: readonly ForwardSegment[], order: readonly number[], x: Float32Array): Promise<ForwardResult> {
    const H = this.config.hiddenSize;
    const V = this.config.vocabSize;
    const rows: { original: number; row: number }[] = [];
    let offset = 0;
    ordered.forEach((s, i) => {
      offset += s.length;
      if (s.wantLogits) rows.push({ original: order[i]!, row: offset - 1 });
    });
    if (rows.length === 0) return { logits: [], argmax: new Int32Array(0) };
    rows.sort((a, b) => a.original - b.original);
    const input = new Float32Array(rows.length * H);
    rows.forEach((r, i) => input.set(x.subarray(r.row * H, (r.row + 1) * H), i * H));
    const { logits, argmax } = await this.lmHead.run(input, rows.length);
    // Views into the one output buffer: no copy of vocabulary-sized rows.
    return { logits: rows.map((_, i) => logits.subarray(i * V, (i + 1) * V)), argmax };
  }

  /** What runs the LM head's vocabulary product (--expert-kernel: `auto` puts it on the native kernel where it can). */
  get lmHeadKernel(): ResolvedExpertKernel {
    return this.lmHead.kernel;
  }

  /** Bytes of the weights (part of denseWeightBytes) held in the native kernel's own storage (the LM head, the layers' own FFNs and gates), not in JavaScript. */
  get nativeWeightBytes(): number {
    return this.lmHead.nativeBytes + this.layers.reduce((n, l) => n + (l.ffn?.weightBytes ?? 0) + (l.router?.weightBytes ?? 0), 0);
  }

  /** What runs the dense MLP, the shared experts and the gates: the native kernel (--expert-kernel `native`, int8/int4 weights: denseFfnOnNative) or the layer graphs. */
  get denseFfnKernel(): ResolvedExpertKernel {
    return this.layers.some((l) => l.ffn) ? 'native' : 'onnxruntime';
  }

  private async embed(tokens: Int32Array): Promise<Float32Array> {
    const ids = BigInt64Array.from(tokens, (t) => BigInt(t));
    return floatData((await this.embedding.run({ ids: i64(ids, [ids.length]) })).x, this.embedding.name, 'x');
  }

  private checkToken(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.config.vocabSize})`);
    }
    return id;
  }

  async close(): Promise<void> {
    for (const l of this.layers) {
      await l.layer.release();
      l.ffn?.release();
      l.router?.release();
      await l.moe?.shared?.release();
    }
    await this.lmHead.release();
    await this.embedding.release();
    await this.experts.close();
  }
}

/** h + y row by row, in float32 (as the graph's Add): into h. */
function addRows(h: Float32Array, y: Float32Array): Float32Array {
  for (let i = 0; i < h.length; i++) h[i]! += y[i]!;
  return h;
}

/** The plan as the layer graph's inputs (see attention-core-graph). */
function attentionFeeds(plan: AttentionPlan): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = { output_rows: i32(plan.outputRows, [plan.outputRows.length]) };
  for (const name of ATTENTION_SETS) {
    const set = plan.sets[name];
    const { groups: G, queryLength: Tq, cachedLength: Lc } = set;
    feeds[`${name}_rows`] = i32(set.rows, [G, Tq]);
    feeds[`${name}_cached_slots`] = i32(set.cachedSlots, [G, Lc]);
    feeds[`${name}_mask`] = f32(set.mask, [G, Tq, 1, Lc + Tq]);
  }
  return feeds;
}

function swigluBytes(w: { gate: WeightData; up: WeightData; down: WeightData }): number {
  return weightBytes(w.gate) + weightBytes(w.up) + weightBytes(w.down);
}

/** Bytes of one layer's dense weights as held: attention, norms, and the dense MLP or the router and shared expert. */
function layerWeightBytes(w: LayerWeights): number {
  const a = w.attention;
  const q = a.q.kind === 'full' ? weightBytes(a.q.proj) : weightBytes(a.q.a) + a.q.norm.byteLength + weightBytes(a.q.b);
  const attention = a.inputNorm.byteLength + q + weightBytes(a.kvA) + a.kvANorm.byteLength + weightBytes(a.kvB) + weightBytes(a.o) + w.postAttentionNorm.byteLength;
  const ffn = w.ffn.kind === 'dense' ? swigluBytes(w.ffn.mlp) : weightBytes(w.ffn.router.gate) + w.ffn.router.scoreCorrectionBias.byteLength + (w.ffn.shared ? swigluBytes(w.ffn.shared) : 0);
  return attention + ffn;
}
