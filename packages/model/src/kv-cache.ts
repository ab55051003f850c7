/**
 * The compressed latent KV cache of MLA: per layer and token one row of kv_lora_rank + rope floats
 * (not full keys and values). Memory is one pool per layer, budgeted up front, handed out in
 * fixed-size blocks so sequences of any length share it without fragmentation.
 */
export class KvCacheFullError extends Error {
  override readonly name = 'KvCacheFullError';
  constructor(needed: number, free: number) {
    super(`KV cache full: need ${needed} blocks, ${free} free; raise --kv-cache-tokens or lower the batch`);
  }
}

export class BlockTable {
  readonly blocks: number[] = [];
  /** Tokens whose cache rows are written. */
  length = 0;
}

export class LatentKvCache {
  readonly pools: Float32Array[];
  private readonly freeBlocks: number[];

  constructor(
    numLayers: number,
    readonly rowSize: number,
    readonly numBlocks: number,
    readonly blockSize = 16,
  ) {
    this.pools = Array.from({ length: numLayers }, () => new Float32Array(numBlocks * blockSize * rowSize));
    // Highest first so pop() hands out low blocks first (easier to read in a debugger, nothing more).
    this.freeBlocks = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  static bytesPerToken(numLayers: number, rowSize: number): number {
    return numLayers * rowSize * 4;
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
    table.length = 0;
  }

  slotOf(table: BlockTable, position: number): number {
    const block = table.blocks[Math.floor(position / this.blockSize)];
    if (block === undefined) throw new RangeError(`position ${position} is beyond the sequence's cache blocks`);
    return block * this.blockSize + (position % this.blockSize);
  }

  /** Writes rows [T, rowSize] of `layer` at the given slots. */
  write(layer: number, slots: Int32Array, rows: Float32Array): void {
    const pool = this.pools[layer]!;
    const d = this.rowSize;
    for (let t = 0; t < slots.length; t++) pool.set(rows.subarray(t * d, (t + 1) * d), slots[t]! * d);
  }
}
