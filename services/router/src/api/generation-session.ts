import { context } from '@opentelemetry/api';
import type { LogitsProcessor, SamplingParams, TokenLogprobs } from '@expertmesh/engine';
import type { RouterMetrics } from '@expertmesh/telemetry';
import { IncrementalDetokenizer, type Tokenizer } from '@expertmesh/tokenizer';
import type { EngineLoop, GenerationStream } from '../serving/engine-loop.js';
import { AnswerParser, type ToolCallDelta } from '../text/answer-parser.js';
import { StopStringMatcher } from '../text/stop-strings.js';

export interface SessionOptions {
  readonly promptTokenIds: readonly number[];
  readonly n: number;
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  readonly stop: readonly string[];
  readonly ignoreEos: boolean;
  /** null: no log-probabilities; k ≥ 0: the chosen token's and the k most likely. */
  readonly topLogprobs: number | null;
  /** Split <think>…</think> into reasoning; `startsInsideThink` when the prompt opened the block. */
  readonly reasoning: { readonly startsInsideThink: boolean } | null;
  /** Parse DeepSeek tool-call blocks out of the answer into tool calls. */
  readonly parseToolCalls?: boolean;
  /** Logits processors of choice i (grammar masks, bias, penalties); called once per choice before it starts. */
  readonly logitsProcessors?: (choice: number) => Promise<readonly LogitsProcessor[]>;
}

export type { ToolCallDelta };
export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface TokenWithLogprobs {
  readonly id: number;
  readonly logprob: number;
  readonly top: readonly (readonly [number, number])[];
}

/** New output of one choice since the last delta. */
export interface ChoiceDelta {
  readonly index: number;
  readonly text: string;
  readonly reasoning: string;
  readonly tokens: readonly TokenWithLogprobs[];
  readonly toolCalls: readonly ToolCallDelta[];
  readonly finishReason: FinishReason | null;
}

/** A choice's whole output, for non-streaming responses. */
export interface CollectedChoice {
  text: string;
  reasoning: string;
  readonly tokens: TokenWithLogprobs[];
  readonly toolCalls: { id: string; name: string; arguments: string }[];
  finishReason: ChoiceDelta['finishReason'];
}

/**
 * One API request's generation: n sequences in the engine, each turned into text deltas
 * (incremental detokenisation, stop strings, reasoning split) as its tokens arrive.
 */
export class GenerationSession {
  private readonly streams: GenerationStream[] = [];
  completionTokens = 0;
  /** The most any of the n sequences found in the prefix cache (the first often finds least). */
  private cachedPromptTokens = 0;

  private readonly startedAt = performance.now();
  private done = false;

  constructor(
    private readonly loop: EngineLoop,
    private readonly tokenizer: Tokenizer,
    private readonly options: SessionOptions,
    private readonly metrics: RouterMetrics | null = null,
  ) {}

  /** Submits all n sequences (throws QueueFullError / InvalidRequestError before any output). */
  async start(): Promise<void> {
    const o = this.options;
    const processors = await Promise.all(Array.from({ length: o.n }, (_, i) => o.logitsProcessors?.(i) ?? []));
    try {
      for (let i = 0; i < o.n; i++) {
        const seed = o.sampling.seed === undefined ? undefined : o.sampling.seed + i;
        this.streams.push(
          this.loop.submit({
            promptTokenIds: o.promptTokenIds,
            maxTokens: o.maxTokens,
            sampling: { ...o.sampling, ...(seed === undefined ? {} : { seed }) },
            ignoreEos: o.ignoreEos,
            topLogprobs: o.topLogprobs === null ? 0 : Math.max(1, o.topLogprobs),
            traceContext: context.active(),
            ...(processors[i]!.length > 0 ? { logitsProcessors: processors[i]! } : {}),
          }),
        );
      }
    } catch (e) {
      this.abort();
      throw e;
    }
    this.metrics?.promptTokens.inc(o.promptTokenIds.length * o.n);
  }

  abort(): void {
    for (const s of this.streams) s.abort();
  }

  /** For a closed connection: stops generating unless the response is already complete. */
  abortUnlessDone(): void {
    if (!this.done) this.abort();
  }

  /**
   * OpenAI's usage object (the prompt counts once, whatever n), with the prompt tokens the prefix
   * cache held as `prompt_tokens_details.cached_tokens`.
   */
  usage(): { prompt_tokens: number; completion_tokens: number; total_tokens: number; prompt_tokens_details: { cached_tokens: number } } {
    const prompt = this.options.promptTokenIds.length;
    return { prompt_tokens: prompt, completion_tokens: this.completionTokens, total_tokens: prompt + this.completionTokens, prompt_tokens_details: { cached_tokens: this.cachedPromptTokens } };
  }

  /** Runs to the end and returns each choice's whole output. */
  async collect(): Promise<CollectedChoice[]> {
    const choices: CollectedChoice[] = Array.from({ length: this.options.n }, () => ({ text: '', reasoning: '', tokens: [], toolCalls: [], finishReason: null }));
    for await (const d of this.deltas()) {
      const c = choices[d.index]!;
      c.text += d.text;
      c.reasoning += d.reasoning;
      c.tokens.push(...d.tokens);
      for (const t of d.toolCalls) {
        if (t.id !== undefined) c.toolCalls[t.index] = { id: t.id, name: t.name ?? '', arguments: '' };
        c.toolCalls[t.index]!.arguments += t.arguments;
      }
      c.finishReason = d.finishReason ?? c.finishReason;
    }
    return choices;
  }

  /** Deltas of all choices as they come, each choice ending with one carrying its finish reason. */
  async *deltas(): AsyncGenerator<ChoiceDelta> {
    const queue: (ChoiceDelta | Error)[] = [];
    let wake: (() => void) | null = null;
    let open = this.streams.length;
    const put = (d: ChoiceDelta | Error): void => {
      queue.push(d);
      wake?.();
      wake = null;
    };
    this.streams.forEach((stream, index) => {
      this.pump(stream, index, put).then(
        () => {
          open--;
          wake?.();
        },
        (e: Error) => put(e),
      );
    });
    while (open > 0 || queue.length > 0) {
      if (queue.length === 0) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      const d = queue.shift()!;
      if (d instanceof Error) {
        this.abort();
        throw d;
      }
      yield d;
    }
    this.done = true;
  }

  private async pump(stream: GenerationStream, index: number, put: (d: ChoiceDelta) => void): Promise<void> {
    const o = this.options;
    const detok = new IncrementalDetokenizer(this.tokenizer, o.promptTokenIds.slice(-4));
    const stops = new StopStringMatcher(o.stop);
    const parser = new AnswerParser({ reasoning: o.reasoning, toolCalls: o.parseToolCalls ?? false });
    const emit = (text: string, tokens: TokenWithLogprobs[], finish: 'stop' | 'length' | null): void => {
      const a = parser.push(text);
      const b = finish ? parser.finish() : { reasoning: '', content: '', toolCalls: [] };
      const finishReason = finish === 'stop' && parser.calledTools ? 'tool_calls' : finish;
      put({ index, text: a.content + b.content, reasoning: a.reasoning + b.reasoning, tokens, toolCalls: [...a.toolCalls, ...b.toolCalls], finishReason });
    };
    let firstAt = 0;
    let lastAt = 0;
    let count = 0;
    for await (const event of stream) {
      this.completionTokens += event.tokenIds.length;
      this.cachedPromptTokens = Math.max(this.cachedPromptTokens, event.cachedPromptTokens ?? 0);
      if (event.tokenIds.length && this.metrics) {
        const now = performance.now();
        if (count === 0) this.metrics.timeToFirstToken.observe((now - this.startedAt) / 1000);
        firstAt ||= now;
        lastAt = now;
        count += event.tokenIds.length;
        this.metrics.generatedTokens.inc(event.tokenIds.length);
      }
      if (event.finishReason !== null && count > 1) this.metrics?.timePerOutputToken.observe((lastAt - firstAt) / 1000 / (count - 1));
      const tokens = o.topLogprobs === null ? [] : withLogprobs(event.tokenIds, event.logprobs, o.topLogprobs);
      let text = detok.push(event.tokenIds);
      if (event.finishReason !== null) text += detok.flush();
      const checked = stops.push(text);
      if (checked.stopped) {
        stream.abort();
        emit(checked.text, tokens, 'stop');
        return;
      }
      if (event.finishReason !== null) {
        emit(checked.text + stops.flush(), tokens, event.finishReason === 'length' ? 'length' : 'stop');
        return;
      }
      if (checked.text || tokens.length) emit(checked.text, tokens, null);
    }
  }
}

function withLogprobs(ids: readonly number[], logprobs: readonly TokenLogprobs[], k: number): TokenWithLogprobs[] {
  return ids.map((id, i) => ({ id, logprob: logprobs[i]?.logprob ?? 0, top: (logprobs[i]?.top ?? []).slice(0, k) }));
}
