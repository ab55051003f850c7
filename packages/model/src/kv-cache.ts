import type { ModelConfig } from '@expertmesh/model-config';

/**
 * The compressed latent KV cache of MLA: per layer and token one row of kv_lora_rank + rope floats
 * (not full keys and values). Memory is one pool per layer, sized up front and addressed in
 * fixed-size blocks; which blocks belong to which sequence is the engine's business (its block
 * allocator): the model only writes and reads rows at the slots a segment's block list gives.
 */
export class LatentKvCache {
  readonly pools: Float32Array[];

  constructor(
    numLayers: number,
    readonly rowSize: number,
    readonly numBlocks: number,
    readonly blockSize = 16,
  ) {
    this.pools = Array.from({ length: numLayers }, () => new Float32Array(numBlocks * blockSize * rowSize));
  }

  /** A cache for `config`'s layers holding at least `tokens` tokens. */
  static forModel(config: ModelConfig, tokens: number, blockSize = 16): LatentKvCache {
    return new LatentKvCache(config.numLayers, config.kvLoraRank + config.qkRopeHeadDim, Math.ceil(tokens / blockSize), blockSize);
  }

  static bytesPerToken(numLayers: number, rowSize: number): number {
    return numLayers * rowSize * 4;
  }

  get capacityTokens(): number {
    return this.numBlocks * this.blockSize;
  }

  /** The pool row of `position` in a sequence whose cache blocks are `blocks`, in order. */
  slotOf(blocks: readonly number[], position: number): number {
    const block = blocks[Math.floor(position / this.blockSize)];
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
