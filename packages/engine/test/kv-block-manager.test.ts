import { describe, expect, it } from 'vitest';
import { BlockTable, extendBlockHashes, KvBlockManager } from '../src/index.js';

const hashes = (tokens: readonly number[], blockSize = 4): string[] => {
  const h: string[] = [];
  extendBlockHashes(h, (p) => tokens[p]!, tokens.length, blockSize);
  return h;
};

/** A sequence of `tokens` computed and committed, then released: its full blocks stay cached. */
function cacheTokens(m: KvBlockManager, tokens: readonly number[]): BlockTable {
  const t = new BlockTable();
  m.adoptCachedPrefix(t, hashes(tokens), tokens.length, true);
  expect(m.grow(t, tokens.length)).toBe(true);
  m.commitFullBlocks(t, hashes(tokens), tokens.length);
  return t;
}

describe('KV block manager', () => {
  it('chained hashes: a block address names its whole prefix', () => {
    const a = hashes([1, 2, 3, 4, 5, 6, 7, 8]);
    const b = hashes([9, 2, 3, 4, 5, 6, 7, 8]);
    expect(a).toHaveLength(2);
    expect(a[1]).not.toBe(b[1]); // same tokens in block 1, different prefix
    expect(hashes([1, 2, 3, 4, 5, 6, 7, 8, 9])).toEqual(a); // the partial block has no address
  });

  it('shares cached full blocks by reference; a fully cached prompt still computes its last block', () => {
    const m = new KvBlockManager(8, 4, true);
    const first = cacheTokens(m, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const t = new BlockTable();
    expect(m.adoptCachedPrefix(t, hashes([1, 2, 3, 4, 5, 6, 7, 8, 0, 0]), 10, true)).toBe(8);
    expect(t.blocks).toEqual(first.blocks.slice(0, 2));
    const exact = new BlockTable();
    expect(m.adoptCachedPrefix(exact, hashes([1, 2, 3, 4, 5, 6, 7, 8]), 8, true)).toBe(4);
    expect(m.hitTokens).toBe(8 + 4);
    m.release(first);
    m.release(t);
    m.release(exact);
    expect(m.freeBlockCount).toBe(8);
    expect(m.cachedBlockCount).toBe(2);
  });

  it('evicts only under pressure, least recently freed first, never a block in use', () => {
    const m = new KvBlockManager(4, 4, true);
    const a = cacheTokens(m, [1, 1, 1, 1]);
    const b = cacheTokens(m, [2, 2, 2, 2]);
    m.release(a);
    m.release(b); // both cached, a freed first
    const fresh = new BlockTable();
    expect(m.grow(fresh, 8)).toBe(true); // the two never-used blocks: no eviction yet
    expect(m.evictions).toBe(0);
    expect(m.cachedBlockCount).toBe(2);
    const inUse = new BlockTable();
    expect(m.adoptCachedPrefix(inUse, hashes([2, 2, 2, 2, 9]), 5, true)).toBe(4); // b's block held again
    const more = new BlockTable();
    expect(m.grow(more, 4)).toBe(true); // needs a block: evicts a (LRU), not b (in use)
    expect(m.evictions).toBe(1);
    expect(m.adoptCachedPrefix(new BlockTable(), hashes([1, 1, 1, 1, 9]), 5, true)).toBe(0);
    expect(m.grow(new BlockTable(), 4)).toBe(false); // nothing left to evict
  });

  it('a block whose address another already has stays private', () => {
    const m = new KvBlockManager(8, 4, true);
    const a = new BlockTable();
    const b = new BlockTable();
    m.grow(a, 4);
    m.grow(b, 4);
    m.commitFullBlocks(a, hashes([5, 5, 5, 5]), 4);
    m.commitFullBlocks(b, hashes([5, 5, 5, 5]), 4); // computed at the same time: a's copy is the shared one
    expect(m.cachedBlockCount).toBe(1);
    m.release(b);
    expect(m.freeBlockCount).toBe(7);
    const c = new BlockTable();
    m.adoptCachedPrefix(c, hashes([5, 5, 5, 5, 6]), 5, true);
    expect(c.blocks).toEqual(a.blocks);
  });

  it('with prefix caching off, nothing is shared', () => {
    const m = new KvBlockManager(4, 4, false);
    cacheTokens(m, [1, 2, 3, 4, 5]);
    expect(m.cachedBlockCount).toBe(0);
    expect(m.adoptCachedPrefix(new BlockTable(), hashes([1, 2, 3, 4, 5]), 5, true)).toBe(0);
    expect(m.queriedTokens).toBe(10);
  });
});
