import { dequantizeBlockFp8ByChunks, FP8_E4M3_TABLE, readFp8Blocks, readLinearWeight, type SafetensorsCheckpoint } from '@expertmesh/weights';
import { scaledCodesQuantizable, type BlockwiseQuantized, type QuantizedBits, type ScaledCodes } from '@expertmesh/tensor-ops';
import { quantizeBlockwiseByChunks, quantizeScaledCodesByChunks } from './quantize-by-chunks.js';

/**
 * The checkpoint's matrix `name` [rows, cols] quantised to `bits` in `block`-column blocks (quantizeBlockwise's
 * codes, whatever the stored format). FP8 with block scales goes straight from its codes (quantizeScaledCodes: no
 * float32 copy of the matrix, 5–6× faster at R1 widths, the same bits; docs/benchmarks.md, issue 13v); other
 * formats, and FP8 layouts it does not take, are widened to float32 first. Either way by runs of rows with a turn of
 * the event loop between them, so that a loading process keeps answering (see CHUNK_VALUES).
 */
export async function readQuantized(checkpoint: SafetensorsCheckpoint, name: string, blockSize: readonly [number, number] | null, rows: number, cols: number, bits: QuantizedBits, block: number): Promise<BlockwiseQuantized> {
  if (checkpoint.info(name).dtype !== 'F8_E4M3') return quantizeBlockwiseByChunks(await readLinearWeight(checkpoint, name, blockSize), rows, cols, bits, block);
  const fp8 = await readFp8Blocks(checkpoint, name, blockSize);
  const m: ScaledCodes = { codes: fp8.codes, values: FP8_E4M3_TABLE, scales: fp8.scales, rows, cols, blockRows: fp8.block[0], blockCols: fp8.block[1] };
  if (scaledCodesQuantizable(m, block)) return quantizeScaledCodesByChunks(m, bits, block);
  const widened = await dequantizeBlockFp8ByChunks(fp8.codes, fp8.scales, rows, cols, fp8.block[0], fp8.block[1]);
  return quantizeBlockwiseByChunks(widened, rows, cols, bits, block);
}
