export class KvCacheFullError extends Error {
  override readonly name = 'KvCacheFullError';
  constructor(needed: number, free: number) {
    super(`KV cache full: need ${needed} blocks, ${free} free; raise --kv-cache-tokens or lower the batch`);
  }
}

/** A sequence's cache blocks, in position order. */
export class BlockTable {
  readonly blocks: number[] = [];
}

/**
 * Hands out the latent KV cache's blocks to sequences. Only the scheduler calls it, and only between
 * steps, so a block never changes owner while a step that uses it runs.
 */
export class KvBlockAllocator {
  private readonly freeBlocks: number[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    // Highest first so pop() hands out low blocks first (easier to read in a debugger, nothing more).
    this.freeBlocks = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get freeBlockCount(): number {
    return this.freeBlocks.length;
  }

  get capacityTokens(): number {
    return this.numBlocks * this.blockSize;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Whether `table` can grow to `totalTokens` tokens. */
  canGrow(table: BlockTable, totalTokens: number): boolean {
    return this.blocksFor(totalTokens) - table.blocks.length <= this.freeBlocks.length;
  }

  grow(table: BlockTable, totalTokens: number): void {
    const needed = this.blocksFor(totalTokens) - table.blocks.length;
    if (needed > this.freeBlocks.length) throw new KvCacheFullError(needed, this.freeBlocks.length);
    for (let i = 0; i < needed; i++) table.blocks.push(this.freeBlocks.pop()!);
  }

  release(table: BlockTable): void {
    for (const b of table.blocks) this.freeBlocks.push(b);
    table.blocks.length = 0;
  }
}
