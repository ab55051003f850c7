import type { ModelConfig } from '@expertmesh/model-config';
import { DeepseekV3Model, LatentKvCache, type ForwardResult, type ForwardSegment, type ModelLoadOptions } from '@expertmesh/model';
import { context, ROOT_CONTEXT, SpanStatusCode, trace } from '@opentelemetry/api';
import { KvBlockManager } from './kv-block-manager.js';
import { splitMicroBatches, type MicroBatchCount } from './micro-batches.js';
import { topLogprobs } from './sampling.js';
import { tracer } from './tracer.js';
import { type KvAdmission, Scheduler, type ScheduledSegment, type SchedulerLimits, type StepPlan } from './scheduler.js';
import { type GenerationRequest, Sequence } from './sequence.js';
import { stepChannel, type StepReport } from './step-channel.js';

/** How the engine's KV cache is sized and shared. */
export interface KvCacheOptions {
  /** Tokens the latent KV cache holds across all sequences (memory is allocated up front). */
  readonly kvCacheTokens?: number;
  /** Share full KV blocks between sequences with the same prefix (default on). */
  readonly prefixCaching?: boolean;
  /** How requests get KV cache (default on-demand, with preemption). */
  readonly kvAdmission?: KvAdmission;
}

/** How a step runs. */
export interface StepOptions {
  /**
   * Micro-batches per step (default 1). With 2, a step's sequences are split in two that go through
   * the layers as a ping-pong pipeline: while one's routed experts run on shards, this process
   * computes the other's attention. Same tokens and logprobs (to float rounding) as 1.
   */
  readonly microBatches?: MicroBatchCount;
}

export interface EngineOptions extends ModelLoadOptions, Partial<SchedulerLimits>, KvCacheOptions, StepOptions {}

/** Prefix-cache counters since start (prompt tokens looked up and found; cached blocks reused for others). */
export interface PrefixCacheStats {
  readonly queriedTokens: number;
  readonly hitTokens: number;
  readonly evictedBlocks: number;
  readonly cachedBlocks: number;
}

export interface GenerationResult {
  readonly tokenIds: readonly number[];
  readonly finishReason: 'stop' | 'length' | 'abort';
  /** Per generated token, when requested. */
  readonly logprobs: readonly { readonly logprob: number; readonly top: readonly (readonly [number, number])[] }[];
  /** Per generated token, the logits that chose it (only with captureLogits). */
  readonly logits: readonly Float32Array[];
}

export class InvalidRequestError extends Error {
  override readonly name = 'InvalidRequestError';
}

/** A change to the scheduler's state asked for by a caller; it takes effect at a step boundary. */
type SchedulerChange = { readonly kind: 'add' | 'abort'; readonly sequence: Sequence };

/**
 * The loop owner: the scheduler decides each step's work, the model runs it, the engine samples
 * and hands finished sequences back. Policy (scheduler) and execution (model) never mix.
 *
 * A step has three phases, and only the first and the last change engine state:
 * 1. plan (a boundary, synchronous): queued submissions and aborts are applied, then the scheduler
 *    picks the step's segments and reserves their cache blocks (taking them on demand, sharing
 *    cached prefix blocks, preempting the newest sequence when the cache runs short). Sequences
 *    join or leave the running set and blocks change owner here and nowhere else.
 * 2. execute (asynchronous, may fail): the model runs the batch. It writes cache rows only at the
 *    planned positions [computedTokens, computedTokens + length) of the planned sequences, in blocks
 *    the plan reserved, and reads only rows below each segment's end. No sequence changes.
 * 3. commit (after execute succeeded): first the changes that arrived during the step are applied
 *    (an aborted sequence's share of the step is dropped, its blocks freed), then each remaining
 *    sequence's computedTokens advances, its newly full blocks get their content address, and its
 *    next token is sampled (logits processors may await: changes asked for meanwhile wait for the
 *    commit's end); finished ones retire.
 *
 * A failed execute commits nothing: every sequence, every sampler's random state and every block
 * table is as the plan left it, and the rows it wrote lie at positions nobody counts as computed.
 * The next step plans again from that state and rewrites those positions before anything reads
 * them. That, not the idempotence of a cache write, is what makes retrying a failed step safe.
 * Callers may submit and abort at any time; while a step executes, their changes wait in a queue.
 */
export class Engine {
  private nextId = 0;
  private readonly cache: LatentKvCache;
  private readonly blocks: KvBlockManager;
  private readonly scheduler: Scheduler;
  private readonly queued: SchedulerChange[] = [];
  private executing = 0;
  /** Micro-batches per step; may change between steps. */
  microBatches: MicroBatchCount;

  constructor(
    readonly model: DeepseekV3Model,
    options: Partial<SchedulerLimits> & KvCacheOptions & StepOptions = {},
  ) {
    this.microBatches = checkMicroBatches(options.microBatches ?? 1);
    this.cache = LatentKvCache.forModel(model.config, options.kvCacheTokens ?? 8192);
    this.blocks = new KvBlockManager(this.cache.numBlocks, this.cache.blockSize, options.prefixCaching ?? true);
    this.scheduler = new Scheduler(this.blocks, { maxBatchSize: options.maxBatchSize ?? 64, maxBatchedTokens: options.maxBatchedTokens ?? 512 }, options.kvAdmission ?? 'on-demand');
  }

  static async load(modelDir: string, options: EngineOptions): Promise<Engine> {
    checkMicroBatches(options.microBatches ?? 1);
    return new Engine(await DeepseekV3Model.load(modelDir, options), options);
  }

  /** Bytes of the latent KV cache, allocated up front. */
  get kvCacheBytes(): number {
    return this.cache.pools.reduce((a, p) => a + p.byteLength, 0);
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get hasWork(): boolean {
    return this.scheduler.hasWork || this.queued.some((c) => c.kind === 'add');
  }

  get numWaiting(): number {
    return this.scheduler.numWaiting + this.queued.filter((c) => c.kind === 'add').length;
  }

  get numRunning(): number {
    return this.scheduler.numRunning;
  }

  /** Whether a step is executing now (changes asked for meanwhile wait for its end). */
  get stepInFlight(): boolean {
    return this.executing > 0;
  }

  /** Fraction of the KV cache's blocks held by sequences (cached blocks nobody holds count as free). */
  get kvCacheUsage(): number {
    return 1 - this.blocks.freeBlockCount / this.blocks.numBlocks;
  }

  get prefixCacheStats(): PrefixCacheStats {
    const b = this.blocks;
    return { queriedTokens: b.queriedTokens, hitTokens: b.hitTokens, evictedBlocks: b.evictions, cachedBlocks: b.cachedBlockCount };
  }

  /** Sequences preempted (cache taken back, recomputed later) since start. */
  get preemptions(): number {
    return this.scheduler.preemptions;
  }

  /** Validates a request and queues it; it joins the waiting line at the next step boundary. */
  submit(request: GenerationRequest): Sequence {
    const c = this.config;
    const n = request.promptTokenIds.length;
    if (n === 0) throw new InvalidRequestError('the prompt is empty: give at least one token');
    for (const id of request.promptTokenIds) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new InvalidRequestError(`prompt token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
    }
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < 1) throw new InvalidRequestError(`max tokens must be a positive integer, got ${request.maxTokens}`);
    if (n + request.maxTokens > c.maxPositionEmbeddings) {
      throw new InvalidRequestError(`prompt (${n}) plus max tokens (${request.maxTokens}) exceeds the model's context of ${c.maxPositionEmbeddings} tokens`);
    }
    const stops = new Set(request.stopTokenIds ?? []);
    if (!request.ignoreEos) for (const id of c.eosTokenIds) stops.add(id);
    const seq = new Sequence(this.nextId++, request, stops);
    const tooBig = this.scheduler.whyNeverFits(seq);
    if (tooBig) throw new InvalidRequestError(tooBig);
    if (request.traceContext) seq.queueSpan = tracer().startSpan('expertmesh.request.queue', { attributes: { 'expertmesh.prompt_tokens': n } }, request.traceContext);
    this.change({ kind: 'add', sequence: seq });
    return seq;
  }

  /** Drops a sequence (client gone): at once between steps, at the end of the running step otherwise. */
  abort(seq: Sequence): void {
    this.change({ kind: 'abort', sequence: seq });
  }

  /**
   * Runs one step (plan, execute, commit; see the class comment); returns the sequences that
   * finished in it. If execute fails, the error propagates and nothing of the step is committed.
   */
  async step(): Promise<Sequence[]> {
    this.applyQueued();
    const reported = stepChannel.hasSubscribers;
    const started = performance.now();
    const plan = this.scheduler.schedule();
    if (plan.segments.length === 0) return this.scheduler.retireFinished();
    let logits: ForwardResult;
    try {
      logits = await this.execute(plan);
    } finally {
      this.applyQueued();
    }
    const executed = performance.now();
    await this.commit(plan, logits);
    if (reported) reportStep(plan, started, executed);
    return this.scheduler.retireFinished();
  }

  /** Generates for all requests together (continuous batching) and returns results in order. */
  async generate(requests: readonly GenerationRequest[]): Promise<GenerationResult[]> {
    const sequences = requests.map((r) => this.submit(r));
    while (sequences.some((s) => !s.isFinished)) await this.step();
    return sequences.map((s) => ({
      tokenIds: s.outputTokenIds,
      finishReason: s.finishReason!,
      logprobs: s.logprobs,
      logits: s.logits,
    }));
  }

  async close(): Promise<void> {
    await this.model.close();
  }

  private change(c: SchedulerChange): void {
    this.queued.push(c);
    if (this.executing === 0) this.applyQueued();
  }

  /** The boundary: applies queued changes in the order they were asked for (only when no step executes). */
  private applyQueued(): void {
    if (this.executing > 0) return;
    for (const { kind, sequence } of this.queued.splice(0)) {
      if (kind === 'add') {
        this.scheduler.add(sequence);
      } else {
        this.scheduler.abort(sequence);
        sequence.queueSpan?.end();
        sequence.queueSpan = null;
      }
    }
  }

  /**
   * The model runs the plan. The step is one span, in the trace of its oldest traced request and
   * linked to the other requests in the batch (a span per token and request would drown a collector).
   */
  private async execute(plan: StepPlan): Promise<ForwardResult> {
    const scheduled = plan.segments;
    for (const seg of scheduled) {
      if (seg.sequence.queueSpan) {
        seg.sequence.queueSpan.end();
        seg.sequence.queueSpan = null;
      }
    }
    const traced = scheduled.flatMap((s) => (s.sequence.request.traceContext ? [s.sequence.request.traceContext] : []));
    const prefill = scheduled.reduce((a, s) => a + (s.start < s.sequence.request.promptTokenIds.length ? s.length : 0), 0);
    const span = tracer().startSpan(
      'expertmesh.engine.step',
      {
        attributes: { 'expertmesh.batch_size': scheduled.length, 'expertmesh.tokens': scheduled.reduce((a, s) => a + s.length, 0), 'expertmesh.prefill_tokens': prefill },
        links: traced.slice(1).flatMap((c) => {
          const sc = trace.getSpanContext(c);
          return sc ? [{ context: sc }] : [];
        }),
      },
      traced[0] ?? ROOT_CONTEXT,
    );
    this.executing++;
    try {
      const parts = splitMicroBatches(scheduled, this.microBatches);
      span.setAttribute('expertmesh.micro_batches', parts.length);
      const results = await context.with(trace.setSpan(traced[0] ?? ROOT_CONTEXT, span), () =>
        this.model.forwardMicroBatches(
          parts.map((p) => p.map((i) => toForwardSegment(scheduled[i]!))),
          this.cache,
        ),
      );
      return inPlanOrder(scheduled, parts, results);
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      this.executing--;
      span.end();
    }
  }

  /**
   * Applies a step's results to the sequences it was planned for (those not dropped meanwhile).
   * It holds the boundary while it runs (a logits processor may await), so aborts and submissions
   * asked for meanwhile wait until it is done.
   */
  private async commit(plan: StepPlan, result: ForwardResult): Promise<void> {
    this.executing++;
    try {
      let next = 0;
      for (const seg of plan.segments) {
        const seq = seg.sequence;
        const row = seg.samples ? next++ : -1;
        if (seq.isFinished) continue; // aborted while the step ran
        if (seq.computedTokens !== seg.start) {
          throw new Error(`internal error: a step planned at position ${seg.start} of sequence ${seq.id} was committed at position ${seq.computedTokens}`);
        }
        seq.computedTokens += seg.length;
        this.scheduler.commitComputed(seq);
        if (row >= 0) await this.appendToken(seq, result.logits[row]!, result.argmax[row]!);
      }
    } finally {
      this.executing--;
    }
    this.applyQueued();
  }

  /** `argmax` is the model's greedy token for these logits, valid until a processor changes them. */
  private async appendToken(seq: Sequence, logits: Float32Array, argmax: number): Promise<void> {
    const processors = seq.request.logitsProcessors ?? [];
    // Log-probabilities come from the model's own distribution, before any processor changes it.
    const raw = processors.length > 0 && (seq.request.topLogprobs || seq.request.captureLogits) ? logits.slice() : logits;
    for (const p of processors) await p.process(logits);
    const token = seq.sampler.sample(logits, processors.length === 0 ? argmax : undefined);
    for (const p of processors) p.accept(token);
    const k = seq.request.topLogprobs ?? 0;
    if (k > 0) {
      const lp = topLogprobs(raw, k, token);
      seq.logprobs.push({ logprob: lp.chosen, top: lp.top });
    }
    if (seq.request.captureLogits) seq.logits.push(raw);
    seq.outputTokenIds.push(token);
    if (seq.stopTokenIds.has(token)) seq.finishReason = 'stop';
    else if (seq.outputTokenIds.length >= seq.request.maxTokens) seq.finishReason = 'length';
  }
}

/** Publishes a finished step on STEP_CHANNEL (called only when someone listens). */
function reportStep(plan: StepPlan, started: number, executed: number): void {
  let tokens = 0;
  let prefillTokens = 0;
  for (const s of plan.segments) {
    tokens += s.length;
    if (s.start < s.sequence.request.promptTokenIds.length) prefillTokens += s.length;
  }
  stepChannel.publish({
    at: performance.timeOrigin + started,
    executeMs: executed - started,
    commitMs: performance.now() - executed,
    sequences: plan.segments.length,
    tokens,
    prefillTokens,
  } satisfies StepReport);
}

function checkMicroBatches(n: number): MicroBatchCount {
  if (n !== 1 && n !== 2) throw new RangeError(`micro-batches must be 1 or 2, got ${String(n)}`);
  return n;
}

/** The logits (and greedy tokens) of the sampling segments in plan order, from each micro-batch's (in its own order). */
function inPlanOrder(segments: readonly ScheduledSegment[], parts: readonly number[][], results: readonly ForwardResult[]): ForwardResult {
  if (parts.length === 1) return results[0]!;
  const partOf = new Int32Array(segments.length);
  parts.forEach((p, k) => p.forEach((i) => (partOf[i] = k)));
  const next = new Array<number>(parts.length).fill(0);
  const logits: Float32Array[] = [];
  const argmax: number[] = [];
  segments.forEach((s, i) => {
    if (!s.samples) return;
    const k = partOf[i]!;
    const row = next[k]!++;
    logits.push(results[k]!.logits[row]!);
    argmax.push(results[k]!.argmax[row]!);
  });
  return { logits, argmax: Int32Array.from(argmax) };
}

function toForwardSegment(seg: ScheduledSegment): ForwardSegment {
  const tokenIds = new Int32Array(seg.length);
  for (let i = 0; i < seg.length; i++) tokenIds[i] = seg.sequence.tokenAt(seg.start + i);
  return { blocks: seg.sequence.blockTable.blocks, startPosition: seg.start, length: seg.length, tokenIds, wantLogits: seg.samples };
}
