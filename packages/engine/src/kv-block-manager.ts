import { createHash } from 'node:crypto';

/** A sequence's cache blocks, in position order (token p is in blocks[p / blockSize]). */
export class BlockTable {
  readonly blocks: number[] = [];
}

/**
 * Who holds which block of the paged latent cache, and which full blocks can be shared. Only the
 * scheduler calls it, and only between steps, so a block never changes owner while a step that
 * uses it runs.
 *
 * Blocks are handed out as sequences grow. A block whose tokens are all computed gets a
 * content address: a hash of its tokens chained with the hash of the block before it, so equal
 * addresses mean equal prefixes (vLLM's prefix caching). A new sequence whose prompt starts with
 * addressed blocks shares them (reference counted) and computes only the rest. A block no
 * sequence holds keeps its address and its rows until the room is needed: blocks without an
 * address are handed out first, then cached ones, least recently freed first (LRU eviction, only
 * under pressure).
 */
export class KvBlockManager {
  /** Sequences holding each block. */
  private readonly refs: Int32Array;
  /** Blocks nobody holds and no address names. */
  private readonly empty: number[] = [];
  /** Cached blocks nobody holds, least recently freed first (a Map keeps insertion order). */
  private readonly evictable = new Map<number, true>();
  /** Content address → block, and back. */
  private readonly byHash = new Map<string, number>();
  private readonly hashOf: (string | undefined)[];
  /** Prompt tokens looked up in the prefix cache, and found (Prometheus counters). */
  queriedTokens = 0;
  hitTokens = 0;
  /** Cached blocks reused for other tokens. */
  evictions = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly prefixCaching: boolean,
  ) {
    this.refs = new Int32Array(numBlocks);
    this.hashOf = new Array<string | undefined>(numBlocks);
    for (let b = numBlocks - 1; b >= 0; b--) this.empty.push(b);
  }

  get capacityTokens(): number {
    return this.numBlocks * this.blockSize;
  }

  /** Blocks that can be handed out now (never held, or cached and evictable). */
  get freeBlockCount(): number {
    return this.empty.length + this.evictable.size;
  }

  /** Blocks holding a content address (shared or evictable). */
  get cachedBlockCount(): number {
    return this.byHash.size;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /**
   * Gives an empty table the cached blocks its tokens start with; returns the tokens they cover.
   * At least one token is always left to compute (its logits pick the next token), so a prompt
   * that is all cached recomputes its last block into a block of its own.
   */
  adoptCachedPrefix(table: BlockTable, hashes: readonly string[], tokenCount: number, countAsQuery: boolean): number {
    if (table.blocks.length !== 0) throw new Error('adoptCachedPrefix needs an empty block table');
    if (countAsQuery) this.queriedTokens += tokenCount;
    if (!this.prefixCaching) return 0;
    const usable = Math.min(hashes.length, Math.floor((tokenCount - 1) / this.blockSize));
    for (let i = 0; i < usable; i++) {
      const block = this.byHash.get(hashes[i]!);
      if (block === undefined) break;
      if (this.refs[block] === 0) this.evictable.delete(block);
      this.refs[block]!++;
      table.blocks.push(block);
    }
    const cached = table.blocks.length * this.blockSize;
    if (countAsQuery) this.hitTokens += cached;
    return cached;
  }

  /** Whether `table` could grow to `tokens` tokens now. */
  canGrow(table: BlockTable, tokens: number): boolean {
    return this.blocksFor(tokens) - table.blocks.length <= this.freeBlockCount;
  }

  /** Grows `table` to hold `tokens` tokens; false (and nothing taken) when the cache is short. */
  grow(table: BlockTable, tokens: number): boolean {
    const needed = this.blocksFor(tokens) - table.blocks.length;
    if (needed > this.freeBlockCount) return false;
    for (let i = 0; i < needed; i++) table.blocks.push(this.takeFree());
    return true;
  }

  /** Gives all of a table's blocks back. Addressed blocks stay cached until their room is needed. */
  release(table: BlockTable): void {
    // Last block first, so a prefix's tail is evicted before its head (its head is what others share).
    for (let i = table.blocks.length - 1; i >= 0; i--) {
      const block = table.blocks[i]!;
      if (--this.refs[block]! > 0) continue;
      if (this.hashOf[block] !== undefined) this.evictable.set(block, true);
      else this.empty.push(block);
    }
    table.blocks.length = 0;
  }

  /**
   * Addresses the table's blocks whose tokens are all computed (`hashes[i]` for block i). A block
   * whose address another block already has stays private: the first copy is the shared one.
   */
  commitFullBlocks(table: BlockTable, hashes: readonly string[], computedTokens: number): void {
    if (!this.prefixCaching) return;
    const full = Math.min(Math.floor(computedTokens / this.blockSize), hashes.length, table.blocks.length);
    for (let i = 0; i < full; i++) {
      const block = table.blocks[i]!;
      const hash = hashes[i]!;
      if (this.hashOf[block] !== undefined || this.byHash.has(hash)) continue;
      this.hashOf[block] = hash;
      this.byHash.set(hash, block);
    }
  }

  private takeFree(): number {
    let block = this.empty.pop();
    if (block === undefined) {
      // Evict the least recently freed cached block: its rows are about to be overwritten.
      block = this.evictable.keys().next().value!;
      this.evictable.delete(block);
      this.byHash.delete(this.hashOf[block]!);
      this.hashOf[block] = undefined;
      this.evictions++;
    }
    this.refs[block] = 1;
    return block;
  }
}

/**
 * Content addresses of the full blocks of `tokens`, extending `hashes` (already computed for the
 * first blocks): each is SHA-256 of the previous address and the block's token ids, so a block's
 * address names its whole prefix.
 */
export function extendBlockHashes(hashes: string[], tokens: (position: number) => number, tokenCount: number, blockSize: number): void {
  const ids = new Int32Array(blockSize);
  for (let b = hashes.length; (b + 1) * blockSize <= tokenCount; b++) {
    for (let i = 0; i < blockSize; i++) ids[i] = tokens(b * blockSize + i);
    const h = createHash('sha256');
    h.update(b === 0 ? '' : hashes[b - 1]!);
    h.update(new Uint8Array(ids.buffer));
    hashes.push(h.digest('base64'));
  }
}
