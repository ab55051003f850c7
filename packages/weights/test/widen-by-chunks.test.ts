import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bf16ToFloat32, CHUNK_VALUES, dequantizeBlockFp8, dequantizeBlockFp8ByChunks, float32ToBf16Bytes, quantizeBlockFp8, readLinearWeight, SafetensorsCheckpoint, writeShardedCheckpoint } from '../src/index.js';
import { loopTurnsDuring } from '../../../test/helpers/loop-turns.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/**
 * A loader widens a real-width tensor (R1's LM head: 926M values, ~15 s) by chunks of CHUNK_VALUES with a loop
 * turn between them, so the process keeps answering health checks and keep-alives; the values are the whole
 * tensor's, bit for bit.
 */
const values = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.013) * 0.05);
const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && Buffer.compare(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), new Uint8Array(b.buffer, b.byteOffset, b.byteLength)) === 0;

describe('widening by chunks', () => {
  // 2.25 chunks of rows each: a partial last chunk, and (FP8) a partial last row block and column block.
  const bfRows = Math.ceil((2.25 * CHUNK_VALUES) / 1000);
  const fp8 = { rows: 1100, cols: 8200 };
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let checkpoint: SafetensorsCheckpoint;
  const q = quantizeBlockFp8(values(fp8.rows * fp8.cols), fp8.rows, fp8.cols, 128, 128);
  beforeAll(async () => {
    dir = await tempDir('widen-by-chunks');
    await writeShardedCheckpoint(
      dir.path,
      [
        { name: 'head.weight', dtype: 'BF16', shape: [bfRows, 1000], data: float32ToBf16Bytes(values(bfRows * 1000)) },
        { name: 'proj.weight', dtype: 'F8_E4M3', shape: [fp8.rows, fp8.cols], data: q.codes },
        { name: 'proj.weight_scale_inv', dtype: 'F32', shape: [9, 65], data: new Uint8Array(q.scaleInv.buffer) },
      ],
      1,
    );
    checkpoint = await SafetensorsCheckpoint.open(dir.path);
  });
  afterAll(async () => {
    await checkpoint?.close();
    await dir?.remove();
  });

  it('a BF16 tensor of 2.25 chunks reads as the whole widening', async () => {
    const whole = bf16ToFloat32(new Uint16Array(float32ToBf16Bytes(values(bfRows * 1000)).buffer));
    expect(same(await readLinearWeight(checkpoint, 'head.weight', null), whole)).toBe(true);
  });

  it('an FP8 tensor with block scales reads as the whole dequantisation', async () => {
    const whole = dequantizeBlockFp8(q.codes, q.scaleInv, fp8.rows, fp8.cols, 128, 128);
    expect(same(await readLinearWeight(checkpoint, 'proj.weight', [128, 128]), whole)).toBe(true);
  });

  it('dequantizeBlockFp8ByChunks gives the loop a turn between chunks of whole row blocks', async () => {
    // 8200 columns: 3 row blocks (384 rows) a chunk, so 1100 rows are 3 chunks.
    const { result, turns } = await loopTurnsDuring(() => dequantizeBlockFp8ByChunks(q.codes, q.scaleInv, fp8.rows, fp8.cols, 128, 128));
    expect(turns).toBeGreaterThanOrEqual(2);
    expect(same(result, dequantizeBlockFp8(q.codes, q.scaleInv, fp8.rows, fp8.cols, 128, 128))).toBe(true);
    await expect(dequantizeBlockFp8ByChunks(q.codes, q.scaleInv.subarray(1), fp8.rows, fp8.cols, 128, 128)).rejects.toThrow(/584 scales .*\(needs 585\)/);
  });
});
