import { describe, expect, it } from 'vitest';
import { GREEDY, KvBlockManager, Scheduler, Sequence, type StepPlan } from '../src/index.js';

const seq = (id: number, promptLength: number, maxTokens: number, first = 0): Sequence =>
  new Sequence(id, { promptTokenIds: Array.from({ length: promptLength }, (_, i) => first + i), maxTokens, sampling: GREEDY }, new Set());

/** What a step would do to the sequences if the forward pass succeeded (as the engine applies it). */
function apply(s: Scheduler, plan: StepPlan, nextToken = 7): void {
  for (const x of plan.segments) {
    x.sequence.computedTokens += x.length;
    s.commitComputed(x.sequence);
    if (x.samples) {
      x.sequence.outputTokenIds.push(nextToken);
      if (x.sequence.outputTokenIds.length >= x.sequence.request.maxTokens) x.sequence.finishReason = 'length';
    }
  }
  s.retireFinished();
}

const view = (plan: StepPlan): [number, number, number, boolean][] => plan.segments.map((x) => [x.sequence.id, x.start, x.length, x.samples]);

describe('scheduler', () => {
  it('chunks a long prompt by the token budget and keeps decoding others alongside', () => {
    const s = new Scheduler(new KvBlockManager(64, 16, false), { maxBatchSize: 8, maxBatchedTokens: 10 });
    const a = seq(0, 3, 4);
    s.add(a);
    let step = s.schedule();
    expect(view(step)).toEqual([[0, 0, 3, true]]);
    apply(s, step);
    const b = seq(1, 25, 2);
    s.add(b);
    step = s.schedule();
    // a decodes one token; b gets the remaining 9 of the budget.
    expect(view(step)).toEqual([
      [0, 3, 1, true],
      [1, 0, 9, false],
    ]);
  });

  it('on demand: admits a request when its prompt fits, and it takes blocks as it grows', () => {
    const blocks = new KvBlockManager(4, 16, false); // 64 tokens
    const s = new Scheduler(blocks, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 30, 30); // may grow to 60 tokens, prompt needs 2 blocks
    const b = seq(1, 20, 30); // prompt needs 2 blocks
    s.add(a);
    s.add(b);
    const step = s.schedule();
    expect(view(step).map((x) => x[0])).toEqual([0, 1]); // both admitted at once: 4 blocks for the prompts
    expect(blocks.freeBlockCount).toBe(0);
    expect(s.numRunning).toBe(2);
  });

  it('reserve (the old scheme): admits only when prompt plus max tokens fit', () => {
    const blocks = new KvBlockManager(4, 16, false);
    const s = new Scheduler(blocks, { maxBatchSize: 8, maxBatchedTokens: 512 }, 'reserve');
    const a = seq(0, 30, 10); // 40 tokens → 3 blocks
    const b = seq(1, 20, 10); // 30 tokens → 2 blocks: must wait
    s.add(a);
    s.add(b);
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([0]);
    expect(s.numWaiting).toBe(1);
    a.finishReason = 'stop';
    s.retireFinished();
    expect(blocks.freeBlockCount).toBe(4);
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([1]);
  });

  it('when the cache runs out, the newest sequence is preempted, then recomputed from prompt plus output', () => {
    const blocks = new KvBlockManager(4, 4, false); // 16 tokens; each request may grow to 10 (3 blocks)
    const s = new Scheduler(blocks, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 4, 6);
    const b = seq(1, 4, 6, 100);
    s.add(a);
    s.add(b);
    let step = s.schedule();
    expect(s.numRunning).toBe(2); // both admitted: their prompts fit
    for (let i = 0; i < 20 && b.preemptions === 0; i++) {
      apply(s, step);
      step = s.schedule();
    }
    // a (older) needed a third block for position 8: b (newest) gave its blocks back.
    expect(view(step)).toEqual([[0, 8, 1, true]]);
    expect(b.preemptions).toBe(1);
    expect(b.computedTokens).toBe(0);
    expect(b.outputTokenIds).toHaveLength(5); // kept: nothing streamed is lost or repeated
    expect(s.numWaiting).toBe(1);
    apply(s, step); // a reaches its 6 tokens and frees its blocks
    expect(a.isFinished).toBe(true);
    // b comes back first in line and recomputes prompt + its 5 tokens, sampling its 6th.
    expect(view(s.schedule())).toEqual([[1, 0, 9, true]]);
  });

  it('rejects a request larger than the whole cache', () => {
    const s = new Scheduler(new KvBlockManager(2, 16, false), { maxBatchSize: 8, maxBatchedTokens: 512 });
    expect(() => s.add(seq(0, 30, 10))).toThrow(/whole cache holds 32/);
  });

  it('abort frees the cache', () => {
    const blocks = new KvBlockManager(8, 16, false);
    const s = new Scheduler(blocks, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 40, 8);
    s.add(a);
    s.schedule();
    expect(blocks.freeBlockCount).toBe(5);
    s.abort(a);
    expect(blocks.freeBlockCount).toBe(8);
    expect(s.hasWork).toBe(false);
  });

  it('respects the maximum batch size', () => {
    const s = new Scheduler(new KvBlockManager(64, 16, false), { maxBatchSize: 2, maxBatchedTokens: 512 });
    for (let i = 0; i < 3; i++) s.add(seq(i, 2, 2));
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([0, 1]);
    expect(s.numWaiting).toBe(1);
  });

  it('a prompt that starts with cached blocks computes only the rest', () => {
    const blocks = new KvBlockManager(16, 4, true);
    const s = new Scheduler(blocks, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 10, 1); // blocks [0-3], [4-7] full after prefill
    s.add(a);
    apply(s, s.schedule());
    expect(a.isFinished).toBe(true);
    const b = new Sequence(1, { promptTokenIds: [0, 1, 2, 3, 4, 5, 6, 7, 99, 98, 97], maxTokens: 2, sampling: GREEDY }, new Set());
    s.add(b);
    expect(view(s.schedule())).toEqual([[1, 8, 3, true]]);
    expect(b.cachedPromptTokens).toBe(8);
    // Diverging mid-block: the second block differs at position 6, so only the first is shared.
    const c = new Sequence(2, { promptTokenIds: [0, 1, 2, 3, 4, 5, 77, 7, 8], maxTokens: 2, sampling: GREEDY }, new Set());
    s.add(c);
    expect(view(s.schedule()).find((x) => x[0] === 2)).toEqual([2, 4, 5, true]);
    expect(blocks.queriedTokens).toBe(10 + 11 + 9);
    expect(blocks.hitTokens).toBe(8 + 4);
  });
});
