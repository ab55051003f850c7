import { extendBlockHashes, type KvBlockManager } from './kv-block-manager.js';
import type { Sequence } from './sequence.js';

export interface SchedulerLimits {
  /** Sequences decoding together at most. */
  readonly maxBatchSize: number;
  /** Tokens one step runs at most (decode tokens plus prefill chunks). */
  readonly maxBatchedTokens: number;
}

/**
 * How a request gets its KV cache: `on-demand` (admitted when its prompt fits, blocks taken as it
 * grows, the newest sequence preempted and later recomputed when the cache runs out, as vLLM does)
 * or `reserve` (admitted only when prompt plus max tokens fit, never preempted: the old scheme,
 * kept for comparison).
 */
export type KvAdmission = 'on-demand' | 'reserve';

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
 * then fills the remaining token budget with prompt chunks (running prefills first, then waiting
 * requests in order: preempted ones first, then new ones in arrival order).
 *
 * Between steps only: `schedule()` is the one place that admits, grows and preempts (the engine
 * calls it at a step boundary, never while a forward pass runs), so its queues and the blocks it
 * hands out never change under a running step. Its changes leave every sequence consistent
 * (blocks held for what it will compute; a preempted one back to zero computed tokens, its output
 * kept), so if the forward pass fails, the next schedule() plans from that state: a retry is safe.
 */
export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  /** Preemptions since start (metrics). */
  preemptions = 0;

  constructor(
    readonly blocks: KvBlockManager,
    readonly limits: SchedulerLimits,
    readonly admission: KvAdmission = 'on-demand',
  ) {}

  /**
   * Why `sequence` could never be served (even alone it needs more than the whole cache), or null.
   * On demand too: a sequence that outgrew the cache would preempt itself forever.
   */
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
    // Decoding sequences first: one token each keeps every stream moving; then running prefills.
    // Only decodes grow (admission took room for all known tokens), oldest first, and a victim is
    // always the newest running sequence, so no victim is already in this step's segments.
    const decoding = this.running.filter((s) => s.pendingTokens === 1);
    const prefilling = this.running.filter((s) => s.pendingTokens > 1);
    for (const seq of [...decoding, ...prefilling]) {
      if (budget === 0) break;
      if (!this.running.includes(seq)) continue; // preempted for an older sequence in this pass
      const length = Math.min(seq.pendingTokens, budget);
      if (!this.makeRoom(seq, seq.computedTokens + length)) continue;
      segments.push(chunk(seq, length));
      budget -= length;
    }
    while (budget > 0 && this.waiting.length > 0 && this.running.length < this.limits.maxBatchSize) {
      const seq = this.waiting[0]!;
      if (!this.admit(seq)) break; // Wait for memory; keep the order.
      this.waiting.shift();
      this.running.push(seq);
      const length = Math.min(seq.pendingTokens, budget);
      segments.push(chunk(seq, length));
      budget -= length;
    }
    return { segments };
  }

  /** Removes finished sequences and frees their cache (their full blocks stay cached). */
  retireFinished(): Sequence[] {
    const done = this.running.filter((s) => s.isFinished);
    for (const s of done) {
      this.blocks.release(s.blockTable);
      this.running.splice(this.running.indexOf(s), 1);
    }
    return done;
  }

  /** Drops a sequence wherever it is (client gone) and frees its cache. Between steps only. */
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

  /** After a step computed `sequence` up to its computedTokens: its newly full blocks become shareable. */
  commitComputed(sequence: Sequence): void {
    extendBlockHashes(sequence.blockHashes, (p) => sequence.tokenAt(p), sequence.computedTokens, this.blocks.blockSize);
    this.blocks.commitFullBlocks(sequence.blockTable, sequence.blockHashes, sequence.computedTokens);
  }

  /**
   * Takes the first waiting sequence's cache: the cached blocks its tokens start with, then room
   * for the rest of its known tokens (on-demand) or for all it may ever hold (reserve).
   */
  private admit(seq: Sequence): boolean {
    extendBlockHashes(seq.blockHashes, (p) => seq.tokenAt(p), seq.totalTokens, this.blocks.blockSize);
    const firstTime = seq.cachedPromptTokens === null;
    const cached = this.blocks.adoptCachedPrefix(seq.blockTable, seq.blockHashes, seq.totalTokens, firstTime);
    const need = this.admission === 'reserve' ? seq.maxCacheTokens : seq.totalTokens;
    if (!this.blocks.grow(seq.blockTable, need)) {
      this.blocks.release(seq.blockTable); // the shared blocks stay cached for when it fits
      return false;
    }
    seq.computedTokens = cached;
    if (firstTime) seq.cachedPromptTokens = Math.min(cached, seq.request.promptTokenIds.length);
    return true;
  }

  /**
   * Grows a running sequence's cache to `tokens`, preempting the newest running sequences while
   * the cache is short. False when the sequence itself was the newest and got preempted.
   */
  private makeRoom(seq: Sequence, tokens: number): boolean {
    while (!this.blocks.grow(seq.blockTable, tokens)) {
      if (this.admission === 'reserve') throw new Error(`sequence ${seq.id} outgrew its reservation`);
      const victim = this.running.at(-1)!;
      this.preempt(victim);
      if (victim === seq) return false;
    }
    return true;
  }

  /**
   * Takes a sequence's cache back and puts it first in line: it is recomputed later from its
   * prompt and the tokens it generated (vLLM's recompute preemption). Its output so far stays, so
   * nothing already streamed is repeated or lost; its full blocks stay cached, so the recompute is
   * often mostly cache hits.
   */
  private preempt(seq: Sequence): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.blocks.release(seq.blockTable);
    seq.computedTokens = 0;
    seq.preemptions++;
    this.preemptions++;
    this.waiting.unshift(seq);
  }
}

function chunk(seq: Sequence, length: number): ScheduledSegment {
  return { sequence: seq, start: seq.computedTokens, length, samples: length === seq.pendingTokens };
}
