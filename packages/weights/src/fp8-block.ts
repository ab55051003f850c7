import { FP8_E4M3_MAX, FP8_E4M3_TABLE, float32ToFp8E4m3 } from './dtypes.js';
import { CheckpointError } from './errors.js';
import { byChunks, CHUNK_VALUES } from './loop-turns.js';
import type { SafetensorsCheckpoint } from './safetensors-reader.js';
import type { TensorInfo } from './safetensors-header.js';

/** Name of the block scales stored next to an FP8 weight: `….weight` → `….weight_scale_inv`. */
export const scaleInvName = (weightName: string): string => `${weightName}_scale_inv`;

function checkBlockArgs(what: string, length: number, rows: number, cols: number, blockRows: number, blockCols: number): void {
  const sizes = [rows, cols].every((n) => Number.isSafeInteger(n) && n >= 0);
  const blocks = [blockRows, blockCols].every((n) => Number.isSafeInteger(n) && n > 0);
  if (!sizes || !blocks) throw new RangeError(`${what}: bad sizes ${rows}×${cols} in ${blockRows}×${blockCols} blocks`);
  if (length !== rows * cols) throw new RangeError(`${what}: ${length} values for a ${rows}×${cols} matrix`);
}

/** Checks dequantisation's arguments, scale grid included; returns the grid's columns. */
function checkDequantizeArgs(codes: Uint8Array, scaleInv: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number): number {
  checkBlockArgs('dequantizeBlockFp8', codes.length, rows, cols, blockRows, blockCols);
  const scaleCols = Math.ceil(cols / blockCols);
  const gridSize = Math.ceil(rows / blockRows) * scaleCols;
  if (scaleInv.length !== gridSize) throw new RangeError(`dequantizeBlockFp8: ${scaleInv.length} scales for a ${rows}×${cols} matrix in ${blockRows}×${blockCols} blocks (needs ${gridSize})`);
  return scaleCols;
}

/**
 * DeepSeek-V3's block-wise FP8: W[r][c] = fp8[r][c] × scale_inv[⌊r/bo⌋][⌊c/bi⌋], where the scale
 * grid is [⌈rows/bo⌉, ⌈cols/bi⌉] (edge blocks may be partial).
 */
export function dequantizeBlockFp8(codes: Uint8Array, scaleInv: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number, out: Float32Array = new Float32Array(rows * cols)): Float32Array {
  const scaleCols = checkDequantizeArgs(codes, scaleInv, rows, cols, blockRows, blockCols);
  if (out.length !== rows * cols) throw new RangeError(`dequantizeBlockFp8: an output of ${out.length} values for a ${rows}×${cols} matrix`);
  const table = FP8_E4M3_TABLE; // a local: module bindings can compile to getters (tsx, vitest), 4× slower in this loop
  for (let r = 0; r < rows; r++) {
    const scaleRow = Math.floor(r / blockRows) * scaleCols;
    const rowStart = r * cols;
    for (let c0 = 0, b = 0; c0 < cols; c0 += blockCols, b++) {
      const s = scaleInv[scaleRow + b]!;
      const end = rowStart + Math.min(c0 + blockCols, cols);
      for (let i = rowStart + c0; i < end; i++) out[i] = table[codes[i]!]! * s;
    }
  }
  return out;
}

/** Block-wise quantisation with scale = amax / 448 per block (1 for an all-zero block), codes = round(w / scale). */
export function quantizeBlockFp8(w: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number): { codes: Uint8Array; scaleInv: Float32Array } {
  checkBlockArgs('quantizeBlockFp8', w.length, rows, cols, blockRows, blockCols);
  const gridRows = Math.ceil(rows / blockRows);
  const gridCols = Math.ceil(cols / blockCols);
  const scaleInv = new Float32Array(gridRows * gridCols);
  const codes = new Uint8Array(rows * cols);
  const encode = float32ToFp8E4m3; // a local, as in dequantizeBlockFp8
  for (let br = 0; br < gridRows; br++) {
    const r0 = br * blockRows;
    const r1 = Math.min(r0 + blockRows, rows);
    for (let bc = 0; bc < gridCols; bc++) {
      const c0 = bc * blockCols;
      const c1 = Math.min(c0 + blockCols, cols);
      let amax = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(w[r * cols + c]!));
      // Stored as float32, so divide by the float32 scale the reader will multiply by.
      const scale = amax > 0 && Number.isFinite(amax) ? Math.fround(amax / FP8_E4M3_MAX) : 1;
      scaleInv[br * gridCols + bc] = scale;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) codes[r * cols + c] = encode(w[r * cols + c]! / scale);
    }
  }
  return { codes, scaleInv };
}

/** Where an FP8 weight's block scales are and how they tile it, checked against the config's block size. */
export interface Fp8BlockLayout {
  readonly rows: number;
  readonly cols: number;
  readonly block: readonly [number, number];
  readonly scaleName: string;
  readonly scaleInfo: TensorInfo;
}

/** The block layout of the F8_E4M3 weight `name` (its sibling `…weight_scale_inv` and `weight_block_size`), with clear errors. */
export function fp8BlockLayout(checkpoint: SafetensorsCheckpoint, name: string, blockSize: readonly [number, number] | null): Fp8BlockLayout {
  const info = checkpoint.info(name);
  const scaleName = scaleInvName(name);
  if (!blockSize) throw new CheckpointError('is FP8 but config.json has no quantization_config.weight_block_size: add it (DeepSeek-V3 uses [128, 128])', info.file, name);
  if (info.shape.length !== 2) throw new CheckpointError(`FP8 weights must be 2-D, got [${info.shape.join(', ')}]`, info.file, name);
  if (!checkpoint.has(scaleName)) {
    throw new CheckpointError(`is FP8 but its scale tensor "${scaleName}" is missing: the checkpoint is incomplete or not DeepSeek-style block FP8`, info.file, name);
  }
  const [rows, cols] = info.shape as [number, number];
  const [blockRows, blockCols] = blockSize;
  const scaleInfo = checkpoint.info(scaleName);
  const grid = [Math.ceil(rows / blockRows), Math.ceil(cols / blockCols)];
  if (scaleInfo.shape.length !== 2 || scaleInfo.shape[0] !== grid[0] || scaleInfo.shape[1] !== grid[1]) {
    throw new CheckpointError(
      `has shape [${scaleInfo.shape.join(', ')}] but "${name}" [${rows}, ${cols}] in ${blockRows}×${blockCols} blocks (quantization_config.weight_block_size) needs [${grid.join(', ')}]`,
      scaleInfo.file,
      scaleName,
    );
  }
  return { rows, cols, block: [blockRows, blockCols], scaleName, scaleInfo };
}

/**
 * A linear weight as float32, whatever its storage: F8_E4M3 needs its sibling `…weight_scale_inv`
 * and the config's `quantization_config.weight_block_size`; other float dtypes convert directly. Written into `into`
 * when given (as many values as the weight has).
 */
export async function readLinearWeight(checkpoint: SafetensorsCheckpoint, name: string, blockSize: readonly [number, number] | null, into?: Float32Array): Promise<Float32Array> {
  const info = checkpoint.info(name);
  if (info.dtype !== 'F8_E4M3') return checkpoint.readFloat32(name, into);
  const { codes, scales, rows, cols, block } = await readFp8Blocks(checkpoint, name, blockSize);
  return dequantizeBlockFp8ByChunks(codes, scales, rows, cols, block[0], block[1], into);
}

/** dequantizeBlockFp8 by chunks of whole row blocks, with a loop turn between chunks (see CHUNK_VALUES); into `out` when given. */
export async function dequantizeBlockFp8ByChunks(codes: Uint8Array, scaleInv: Float32Array, rows: number, cols: number, blockRows: number, blockCols: number, out: Float32Array = new Float32Array(rows * cols)): Promise<Float32Array> {
  const scaleCols = checkDequantizeArgs(codes, scaleInv, rows, cols, blockRows, blockCols);
  if (out.length !== rows * cols) throw new RangeError(`dequantizeBlockFp8ByChunks: an output of ${out.length} values for a ${rows}×${cols} matrix`);
  const perChunk = Math.max(1, Math.floor(CHUNK_VALUES / Math.max(1, cols) / blockRows)) * blockRows;
  await byChunks(rows, perChunk, (r0, r1) => {
    const scales = scaleInv.subarray((r0 / blockRows) * scaleCols, Math.ceil(r1 / blockRows) * scaleCols);
    dequantizeBlockFp8(codes.subarray(r0 * cols, r1 * cols), scales, r1 - r0, cols, blockRows, blockCols, out.subarray(r0 * cols, r1 * cols));
  });
  return out;
}

/** An F8_E4M3 weight as stored: its codes and its block scales (as float32), not widened. */
export interface Fp8Blocks {
  readonly codes: Uint8Array;
  readonly scales: Float32Array;
  readonly rows: number;
  readonly cols: number;
  readonly block: readonly [number, number];
}

/** The F8_E4M3 weight `name`'s codes and block scales (see fp8BlockLayout for the checks). */
export async function readFp8Blocks(checkpoint: SafetensorsCheckpoint, name: string, blockSize: readonly [number, number] | null): Promise<Fp8Blocks> {
  const { rows, cols, block, scaleName } = fp8BlockLayout(checkpoint, name, blockSize);
  const [codes, scales] = await Promise.all([checkpoint.readRaw(name), checkpoint.readFloat32(scaleName)]);
  return { codes, scales, rows, cols, block };
}
