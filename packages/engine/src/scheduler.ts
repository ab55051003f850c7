import type { KvBlockAllocator } from './kv-block-allocator.js';
import type { Sequence } from './sequence.js';

export interface SchedulerLimits {
  /** Sequences decoding together at most. */
  readonly maxBatchSize: number;
  /** Tokens one step runs at most (decode tokens plus prefill chunks). */
  readonly maxBatchedTokens: number;
}

/** One sequence's work in a step: tokens [start, start+length) of its prompt/output. */
export interface ScheduledSegment {
  readonly sequence: Sequence;
  readonly start: number;
  readonly length: number;
  /** True when the segment reaches the end of the known tokens, so a next token is sampled. */
  readonly samples: boolean;
}

/** One step's work, decided at a step boundary; the engine executes it, then commits it. */
export interface StepPlan {
  readonly segments: readonly ScheduledSegment[];
}

/**
 * Continuous batching: each step takes one token from every running sequence that is decoding,
 * then fills the remaining token budget with prompt chunks (running prefills first, then new
 * requests in arrival order). A request is admitted only when the cache can hold its prompt plus
 * all tokens it may generate, so an admitted request never fails for lack of memory later.
 * The engine calls it only between steps (see Engine): its queues and the blocks it hands out never
 * change under a running step.
 */
export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];

  constructor(
    private readonly blocks: KvBlockAllocator,
    readonly limits: SchedulerLimits,
  ) {}

  /** Why `sequence` could never be admitted (it needs more than the whole cache), or null. */
  whyNeverFits(sequence: Sequence): string | null {
    if (this.blocks.blocksFor(sequence.maxCacheTokens) <= this.blocks.numBlocks) return null;
    return `request needs ${sequence.maxCacheTokens} cache tokens but the whole cache holds ${this.blocks.capacityTokens}: shorten the prompt or max_tokens`;
  }

  add(sequence: Sequence): void {
    const tooBig = this.whyNeverFits(sequence);
    if (tooBig) throw new RangeError(tooBig);
    this.waiting.push(sequence);
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  schedule(): StepPlan {
    const segments: ScheduledSegment[] = [];
    let budget = this.limits.maxBatchedTokens;
    // Decoding sequences first: one token each keeps every stream moving.
    for (const seq of this.running) {
      if (seq.pendingTokens === 1 && budget > 0) {
        segments.push({ sequence: seq, start: seq.computedTokens, length: 1, samples: true });
        budget--;
      }
    }
    for (const seq of this.running) {
      if (seq.pendingTokens > 1 && budget > 0) budget -= this.pushChunk(segments, seq, budget);
    }
    while (budget > 0 && this.waiting.length > 0 && this.running.length < this.limits.maxBatchSize) {
      const seq = this.waiting[0]!;
      if (!this.blocks.canGrow(seq.blockTable, seq.maxCacheTokens)) break; // Wait for memory; keep arrival order.
      this.blocks.grow(seq.blockTable, seq.maxCacheTokens);
      this.waiting.shift();
      this.running.push(seq);
      budget -= this.pushChunk(segments, seq, budget);
    }
    return { segments };
  }

  /** Removes finished sequences and frees their cache. */
  retireFinished(): Sequence[] {
    const done = this.running.filter((s) => s.isFinished);
    for (const s of done) {
      this.blocks.release(s.blockTable);
      this.running.splice(this.running.indexOf(s), 1);
    }
    return done;
  }

  /** Drops a sequence wherever it is (client gone); frees its cache at once. */
  abort(sequence: Sequence): void {
    sequence.finishReason ??= 'abort';
    const w = this.waiting.indexOf(sequence);
    if (w >= 0) this.waiting.splice(w, 1);
    const r = this.running.indexOf(sequence);
    if (r >= 0) {
      this.running.splice(r, 1);
      this.blocks.release(sequence.blockTable);
    }
  }

  private pushChunk(segments: ScheduledSegment[], seq: Sequence, budget: number): number {
    const length = Math.min(seq.pendingTokens, budget);
    segments.push({ sequence: seq, start: seq.computedTokens, length, samples: length === seq.pendingTokens });
    return length;
  }
}
