import { quantizeBlockwise, quantizeScaledCodes, type BlockwiseQuantized, type QuantizedBits, type ScaledCodes } from '@expertmesh/tensor-ops';
import { byChunks, CHUNK_VALUES } from '@expertmesh/weights';

/**
 * quantizeBlockwise by runs of whole rows (rows quantise independently, so the codes and scales are those of the
 * whole matrix), with a turn of the event loop between runs: DeepSeek-R1's LM head (926M values) takes ~12 s to
 * quantise to int8 on this machine, which a loading router or shard would otherwise spend without answering anything.
 */
export async function quantizeBlockwiseByChunks(w: Float32Array, rows: number, cols: number, bits: QuantizedBits, block: number): Promise<BlockwiseQuantized> {
  if (w.length !== rows * cols) throw new RangeError(`weight has ${w.length} values, expected ${rows}×${cols}`);
  const perChunk = Math.max(1, Math.floor(CHUNK_VALUES / Math.max(1, cols)));
  if (rows <= perChunk) return quantizeBlockwise(w, rows, cols, bits, block);
  const kBlocks = Math.ceil(cols / block);
  const blob = (block * bits) / 8;
  const codes = new Uint8Array(rows * kBlocks * blob);
  const scales = new Float32Array(rows * kBlocks);
  await byChunks(rows, perChunk, (r0, r1) => {
    const part = quantizeBlockwise(w.subarray(r0 * cols, r1 * cols), r1 - r0, cols, bits, block);
    codes.set(part.codes, r0 * kBlocks * blob);
    scales.set(part.scales, r0 * kBlocks);
  });
  return { bits, block, rows, cols, codes, scales };
}

/**
 * quantizeScaledCodes by runs of whole scale-block rows (each run sees exactly its own scale rows, so the codes and
 * scales are those of the whole matrix), with a loop turn between runs.
 */
export async function quantizeScaledCodesByChunks(m: ScaledCodes, bits: QuantizedBits, block: number): Promise<BlockwiseQuantized> {
  const { rows, cols, blockRows, blockCols } = m;
  const perChunk = Math.max(1, Math.floor(CHUNK_VALUES / Math.max(1, cols) / blockRows)) * blockRows;
  if (rows <= perChunk) return quantizeScaledCodes(m, bits, block);
  const scaleCols = Math.ceil(cols / blockCols);
  const kBlocks = Math.ceil(cols / block);
  const blob = (block * bits) / 8;
  const codes = new Uint8Array(rows * kBlocks * blob);
  const scales = new Float32Array(rows * kBlocks);
  await byChunks(rows, perChunk, (r0, r1) => {
    const part = quantizeScaledCodes(
      { ...m, codes: m.codes.subarray(r0 * cols, r1 * cols), scales: m.scales.subarray((r0 / blockRows) * scaleCols, Math.ceil(r1 / blockRows) * scaleCols), rows: r1 - r0 },
      bits,
      block,
    );
    codes.set(part.codes, r0 * kBlocks * blob);
    scales.set(part.scales, r0 * kBlocks);
  });
  return { bits, block, rows, cols, codes, scales };
}
