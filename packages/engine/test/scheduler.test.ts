import { describe, expect, it } from 'vitest';
import { GREEDY, KvBlockAllocator, Scheduler, Sequence } from '../src/index.js';

const seq = (id: number, promptLength: number, maxTokens: number): Sequence =>
  new Sequence(id, { promptTokenIds: Array.from({ length: promptLength }, (_, i) => i), maxTokens, sampling: GREEDY }, new Set());

describe('scheduler', () => {
  it('chunks a long prompt by the token budget and keeps decoding others alongside', () => {
    const cache = new KvBlockAllocator(64, 16);
    const s = new Scheduler(cache, { maxBatchSize: 8, maxBatchedTokens: 10 });
    const a = seq(0, 3, 4);
    s.add(a);
    let step = s.schedule().segments;
    expect(step.map((x) => [x.sequence.id, x.start, x.length, x.samples])).toEqual([[0, 0, 3, true]]);
    a.computedTokens = 3;
    a.outputTokenIds.push(7);
    const b = seq(1, 25, 2);
    s.add(b);
    step = s.schedule().segments;
    // a decodes one token; b gets the remaining 9 of the budget.
    expect(step.map((x) => [x.sequence.id, x.start, x.length, x.samples])).toEqual([
      [0, 3, 1, true],
      [1, 0, 9, false],
    ]);
  });

  it('admits a request only when the cache can hold prompt plus max tokens, and keeps it waiting otherwise', () => {
    const cache = new KvBlockAllocator(4, 16); // 64 tokens
    const s = new Scheduler(cache, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 30, 10); // 40 tokens → 3 blocks
    const b = seq(1, 20, 10); // 30 tokens → 2 blocks: must wait
    s.add(a);
    s.add(b);
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([0]);
    expect(s.numWaiting).toBe(1);
    a.finishReason = 'stop';
    s.retireFinished();
    expect(cache.freeBlockCount).toBe(4);
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([1]);
  });

  it('rejects a request larger than the whole cache', () => {
    const s = new Scheduler(new KvBlockAllocator(2, 16), { maxBatchSize: 8, maxBatchedTokens: 512 });
    expect(() => s.add(seq(0, 30, 10))).toThrow(/whole cache holds 32/);
  });

  it('abort frees the cache at once', () => {
    const cache = new KvBlockAllocator(8, 16);
    const s = new Scheduler(cache, { maxBatchSize: 8, maxBatchedTokens: 512 });
    const a = seq(0, 40, 8);
    s.add(a);
    s.schedule();
    expect(cache.freeBlockCount).toBe(5);
    s.abort(a);
    expect(cache.freeBlockCount).toBe(8);
    expect(s.hasWork).toBe(false);
  });

  it('respects the maximum batch size', () => {
    const s = new Scheduler(new KvBlockAllocator(64, 16), { maxBatchSize: 2, maxBatchedTokens: 512 });
    for (let i = 0; i < 3; i++) s.add(seq(i, 2, 2));
    expect(s.schedule().segments.map((x) => x.sequence.id)).toEqual([0, 1]);
    expect(s.numWaiting).toBe(1);
  });
});
