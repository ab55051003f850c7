import type { BlockwiseQuantized } from './blockwise-quantizer.js';
import type { FileRange } from './onnx-model-builder.js';

/**
 * A weight as the graphs receive it. Either float32 values in memory (`--weight-dtype float32`,
 * and small tensors such as norms), or the checkpoint's own bytes in its file, widened to float32
 * inside the graph only where and when a product needs them, or blockwise int8/int4 codes with their
 * scales (`--weight-dtype int8|int4`, lossy), multiplied by onnxruntime's MatMulNBits without ever
 * being widened. `linear` in graph-ops picks the ops per kind.
 */
export type StoredDtype = 'float32' | 'bfloat16' | 'float16' | 'float8e4m3fn';

/** DeepSeek-V3's block FP8 scales: W[r][c] = code[r][c] × scale_inv[⌊r/block₀⌋][⌊c/block₁⌋], scale_inv float32 [grid₀, grid₁]. */
export interface BlockScales {
  readonly file: FileRange;
  readonly grid: readonly [number, number];
  readonly block: readonly [number, number];
}

export type WeightData =
  | { readonly kind: 'memory'; readonly dims: readonly number[]; readonly data: Float32Array }
  | { readonly kind: 'file'; readonly dtype: StoredDtype; readonly dims: readonly number[]; readonly file: FileRange; readonly scales: BlockScales | null }
  | { readonly kind: 'quantized'; readonly dims: readonly number[]; readonly q: BlockwiseQuantized };

export const STORED_DTYPE_BYTES: Record<StoredDtype, number> = { float32: 4, bfloat16: 2, float16: 2, float8e4m3fn: 1 };

/** Bytes this weight occupies in the process that holds it (codes plus scales for FP8). */
export function weightBytes(w: WeightData): number {
  if (w.kind === 'quantized') return w.q.codes.byteLength + w.q.scales.byteLength;
  return w.kind === 'memory' ? w.data.byteLength : w.file.length + (w.scales?.file.length ?? 0);
}

/** The format a weight is held in, for reports: "float32", "bfloat16", "float8e4m3fn+block128x128", "int8+block128". */
export function weightFormat(w: WeightData): string {
  if (w.kind === 'memory') return 'float32';
  if (w.kind === 'quantized') return `int${w.q.bits}+block${w.q.block}`;
  return w.scales ? `${w.dtype}+block${w.scales.block[0]}x${w.scales.block[1]}` : w.dtype;
}

export const memoryWeight = (data: Float32Array, dims: readonly number[]): WeightData => ({ kind: 'memory', dims, data });
