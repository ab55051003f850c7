import type { ModelConfig } from '@expertmesh/model-config';
import { DeepseekV3Model, type ForwardSegment, type ModelLoadOptions } from '@expertmesh/model';
import { context, ROOT_CONTEXT, SpanStatusCode, trace } from '@opentelemetry/api';
import { topLogprobs } from './sampling.js';
import { tracer } from './tracer.js';
import { Scheduler, type ScheduledSegment, type SchedulerLimits } from './scheduler.js';
import { type GenerationRequest, Sequence } from './sequence.js';

export interface EngineOptions extends ModelLoadOptions, Partial<SchedulerLimits> {}

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

/**
 * The loop owner: the scheduler decides each step's work, the model runs it, the engine samples
 * and hands finished sequences back. Policy (scheduler) and execution (model) never mix.
 */
export class Engine {
  private nextId = 0;
  private readonly scheduler: Scheduler;

  private constructor(
    readonly model: DeepseekV3Model,
    limits: SchedulerLimits,
  ) {
    this.scheduler = new Scheduler(model.cache, limits);
  }

  static async load(modelDir: string, options: EngineOptions): Promise<Engine> {
    const model = await DeepseekV3Model.load(modelDir, options);
    return new Engine(model, { maxBatchSize: options.maxBatchSize ?? 64, maxBatchedTokens: options.maxBatchedTokens ?? 512 });
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get hasWork(): boolean {
    return this.scheduler.hasWork;
  }

  get numWaiting(): number {
    return this.scheduler.numWaiting;
  }

  get numRunning(): number {
    return this.scheduler.numRunning;
  }

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
    try {
      this.scheduler.add(seq);
    } catch (e) {
      throw new InvalidRequestError((e as Error).message);
    }
    if (request.traceContext) seq.queueSpan = tracer().startSpan('expertmesh.request.queue', { attributes: { 'expertmesh.prompt_tokens': n } }, request.traceContext);
    return seq;
  }

  abort(seq: Sequence): void {
    this.scheduler.abort(seq);
    seq.queueSpan?.end();
    seq.queueSpan = null;
  }

  /** Fraction of the KV cache's blocks handed out. */
  get kvCacheUsage(): number {
    const c = this.model.cache;
    return 1 - c.freeBlockCount / c.numBlocks;
  }

  /**
   * Runs one step; returns the sequences that finished in it. The step is one span, in the trace of
   * its oldest traced request and linked to the other requests in the batch (a span per token and
   * request would drown a collector).
   */
  async step(): Promise<Sequence[]> {
    const scheduled = this.scheduler.schedule();
    if (scheduled.length === 0) return this.scheduler.retireFinished();
    for (const seg of scheduled) {
      if (seg.start === 0 && seg.sequence.queueSpan) {
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
    let logits: Float32Array[];
    try {
      logits = await context.with(trace.setSpan(traced[0] ?? ROOT_CONTEXT, span), () => this.model.forward(scheduled.map(toForwardSegment)));
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
    let next = 0;
    for (const seg of scheduled) {
      seg.sequence.computedTokens += seg.length;
      if (seg.samples) this.appendToken(seg.sequence, logits[next++]!);
    }
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

  private appendToken(seq: Sequence, logits: Float32Array): void {
    const token = seq.sampler.sample(logits);
    const k = seq.request.topLogprobs ?? 0;
    if (k > 0) {
      const lp = topLogprobs(logits, k, token);
      seq.logprobs.push({ logprob: lp.chosen, top: lp.top });
    }
    if (seq.request.captureLogits) seq.logits.push(logits);
    seq.outputTokenIds.push(token);
    if (seq.stopTokenIds.has(token)) seq.finishReason = 'stop';
    else if (seq.outputTokenIds.length >= seq.request.maxTokens) seq.finishReason = 'length';
  }

  async close(): Promise<void> {
    await this.model.close();
  }
}

function toForwardSegment(seg: ScheduledSegment): ForwardSegment {
  const tokenIds = new Int32Array(seg.length);
  for (let i = 0; i < seg.length; i++) tokenIds[i] = seg.sequence.tokenAt(seg.start + i);
  return { cache: seg.sequence.cache, startPosition: seg.start, length: seg.length, tokenIds, wantLogits: seg.samples };
}
