import { FP8_E4M3_MAX, FP8_E4M3_TABLE, float32ToFp8E4m3 } from './dtypes.js';
import { CheckpointError } from './errors.js';
import type { SafetensorsCheckpoint } from './safetensors-reader.js';

/**
 * DeepSeek-V3's block-wise FP8: W[r][c] = fp8[r][c] × scale_inv[⌊r/bo⌋][⌊c/bi⌋], where the scale
 * grid is [⌈rows/bo⌉, ⌈cols/bi⌉] (edge blocks may be partial).
 */
export function dequantizeBlockFp8(codes: Uint8Array, scaleInv: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number): Float32Array {
  const scaleCols = Math.ceil(cols / blockCols);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const scaleRow = Math.floor(r / blockRows) * scaleCols;
    for (let c0 = 0; c0 < cols; c0 += blockCols) {
      const s = scaleInv[scaleRow + c0 / blockCols]!;
      const end = Math.min(c0 + blockCols, cols);
      for (let c = c0; c < end; c++) out[r * cols + c] = FP8_E4M3_TABLE[codes[r * cols + c]!]! * s;
    }
  }
  return out;
}

/** Block-wise quantisation with scale = amax / 448 per block (1 for an all-zero block). */
export function quantizeBlockFp8(w: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number): { codes: Uint8Array; scaleInv: Float32Array } {
  const gridRows = Math.ceil(rows / blockRows);
  const gridCols = Math.ceil(cols / blockCols);
  const scaleInv = new Float32Array(gridRows * gridCols);
  const codes = new Uint8Array(rows * cols);
  for (let br = 0; br < gridRows; br++) {
    for (let bc = 0; bc < gridCols; bc++) {
      const r1 = Math.min((br + 1) * blockRows, rows);
      const c1 = Math.min((bc + 1) * blockCols, cols);
      let amax = 0;
      for (let r = br * blockRows; r < r1; r++) for (let c = bc * blockCols; c < c1; c++) amax = Math.max(amax, Math.abs(w[r * cols + c]!));
      const scale = amax > 0 ? Math.fround(amax / FP8_E4M3_MAX) : 1;
      scaleInv[br * gridCols + bc] = scale;
      for (let r = br * blockRows; r < r1; r++) for (let c = bc * blockCols; c < c1; c++) codes[r * cols + c] = float32ToFp8E4m3(w[r * cols + c]! / scale);
    }
  }
  return { codes, scaleInv };
}

/**
 * A weight as float32, whatever its storage: F8_E4M3 needs its sibling `…weight_scale_inv` and the
 * config's block size; other dtypes convert directly.
 */
export async function readLinearWeight(checkpoint: SafetensorsCheckpoint, name: string, blockSize: readonly [number, number] | null): Promise<Float32Array> {
  const info = checkpoint.info(name);
  if (info.dtype !== 'F8_E4M3') return checkpoint.readFloat32(name);
  const scaleName = name.replace(/\.weight$/, '.weight_scale_inv');
  if (!blockSize) throw new CheckpointError('is FP8 but config.json has no quantization_config.weight_block_size', info.file, name);
  if (info.shape.length !== 2) throw new CheckpointError(`FP8 weights must be 2-D, got [${info.shape.join(', ')}]`, info.file, name);
  if (!checkpoint.has(scaleName)) throw new CheckpointError(`is FP8 but its scale tensor "${scaleName}" is missing`, info.file, name);
  const [rows, cols] = info.shape as [number, number];
  const scaleInfo = checkpoint.info(scaleName);
  const grid = [Math.ceil(rows / blockSize[0]), Math.ceil(cols / blockSize[1])];
  if (scaleInfo.shape.length !== 2 || scaleInfo.shape[0] !== grid[0] || scaleInfo.shape[1] !== grid[1]) {
    throw new CheckpointError(
      `has shape [${scaleInfo.shape.join(', ')}] but a [${rows}, ${cols}] weight in ${blockSize[0]}×${blockSize[1]} blocks needs [${grid.join(', ')}]`,
      scaleInfo.file,
      scaleName,
    );
  }
  const [codes, scales] = await Promise.all([checkpoint.readRaw(name), checkpoint.readFloat32(scaleName)]);
  return dequantizeBlockFp8(codes, scales, rows, cols, blockSize[0], blockSize[1]);
}
