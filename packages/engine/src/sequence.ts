import type { Context, Span } from '@opentelemetry/api';
import { BlockTable } from './kv-block-manager.js';
import { Sampler, type SamplingParams } from './sampling.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationRequest {
  readonly promptTokenIds: readonly number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  /** Token ids that end generation (the model's EOS unless ignoreEos). */
  readonly stopTokenIds?: readonly number[];
  readonly ignoreEos?: boolean;
  /** Return this many top log-probabilities per generated token (0 = none). */
  readonly topLogprobs?: number;
  /** Keep the full logits of each generated token (tests and debugging only: vocab floats each). */
  readonly captureLogits?: boolean;
  /** The request's trace context: its queue span and the steps it runs in join this trace. */
  readonly traceContext?: Context;
  /** Change the logits before each sample (grammar masks, logit bias), in order; one set per sequence. */
  readonly logitsProcessors?: readonly LogitsProcessor[];
}

/**
 * Sees a sequence's logits before each sample and the token drawn after it. Log-probabilities are
 * reported from the logits before any processor (as vLLM reports them by default).
 */
export interface LogitsProcessor {
  /** Changes `logits` in place (e.g. -Infinity for tokens a grammar does not allow next). */
  process(logits: Float32Array): void | Promise<void>;
  /** The token sampled from the processed logits. */
  accept(tokenId: number): void;
}

export interface TokenLogprobs {
  readonly logprob: number;
  readonly top: readonly (readonly [number, number])[];
}

/** A request being served: its tokens so far, its cache blocks and where it stands. */
export class Sequence {
  readonly outputTokenIds: number[] = [];
  readonly logprobs: TokenLogprobs[] = [];
  readonly logits: Float32Array[] = [];
  readonly blockTable = new BlockTable();
  readonly sampler: Sampler;
  /** Tokens whose keys and values are in the cache. */
  computedTokens = 0;
  /** Content addresses of the full blocks of the known tokens (prefix caching). */
  readonly blockHashes: string[] = [];
  /** Prompt tokens the prefix cache held when the sequence was first scheduled; null before. */
  cachedPromptTokens: number | null = null;
  /** Times its cache was taken back (it was recomputed each time). */
  preemptions = 0;
  finishReason: FinishReason | null = null;
  /** Open from submission until the sequence is first scheduled (tracing only). */
  queueSpan: Span | null = null;

  constructor(
    readonly id: number,
    readonly request: GenerationRequest,
    readonly stopTokenIds: ReadonlySet<number>,
  ) {
    this.sampler = new Sampler(request.sampling);
  }

  get totalTokens(): number {
    return this.request.promptTokenIds.length + this.outputTokenIds.length;
  }

  tokenAt(position: number): number {
    const p = this.request.promptTokenIds.length;
    return position < p ? this.request.promptTokenIds[position]! : this.outputTokenIds[position - p]!;
  }

  /** Tokens still to be run through the model before the next one can be sampled. */
  get pendingTokens(): number {
    return this.totalTokens - this.computedTokens;
  }

  /** Cache rows the sequence may need: prompt plus every token it may generate (the last needs none). */
  get maxCacheTokens(): number {
    return this.request.promptTokenIds.length + this.request.maxTokens;
  }

  get isFinished(): boolean {
    return this.finishReason !== null;
  }
}
