import { stackQuantizedRows, type BlockwiseQuantized } from './blockwise-quantizer.js';
import type { OnnxModelBuilder } from './onnx-model-builder.js';
import { STORED_DTYPE_BYTES, type WeightData } from './weight-data.js';

/** Shared building blocks written once in ONNX ops, so every graph spells the math the same way. */

/** A small float32 constant baked into the graph (norm weights, routing bias). */
export function weight(b: OnnxModelBuilder, data: Float32Array, dims: readonly number[], hint: string): string {
  return b.constant({ type: 'float32', dims, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, hint);
}

/**
 * Bytes of float32 one widened chunk of a weight may take. Widening a whole matrix before its
 * product costs a temporary as large as the matrix in float32 (3.7 GB for R1's LM head) and streams
 * it through memory twice; chunks of this size stay in cache between the Cast and the Gemm that
 * reads them (measured on a 4096×7168 BF16 matrix: 13 ms by 128-row chunks against 33 ms at once).
 */
export const WIDEN_CHUNK_BYTES = 4 << 20;

/**
 * y = x · Wᵀ for a Hugging Face weight W of shape [out, in], x [T, in] → [T, out].
 * - float32 in memory: Gemm with transB. Baked into the graph, onnxruntime's Gemm pre-packs the transposed B
 *   itself; MatMul over a Transpose had onnxruntime fold the Transpose into a new initializer first, half the
 *   session's creation on the calling thread (measured at R1's o_proj, 448 MiB: 11.0 → 6.3 s) and one more copy
 *   of the weight at its peak, for the same pre-packed product (docs/benchmarks.md, issue 13, "float32 at R1's widths").
 *   Fed per run past the graph's inline budget: Gemm with transB too (no per-run transpose).
 * - BF16/F16 in the checkpoint file: per chunk of rows, Cast to float32 then Gemm; outputs concatenated.
 * - FP8 with block scales: per chunk of whole row blocks, Cast × the blocks' scales, then Gemm.
 * The stored weight is an overridable initializer, so onnxruntime neither folds the Cast into a float32
 * copy at session creation nor pre-packs it: the process holds the checkpoint's bytes only.
 * - int8/int4 blockwise codes: com.microsoft MatMulNBits, which reads the codes as they are.
 */
export function linear(b: OnnxModelBuilder, x: string, w: WeightData, hint: string): string {
  if (w.kind === 'quantized') return matMulNBits(b, x, w.q, hint);
  if (w.kind === 'memory') {
    return b.op('Gemm', [x, b.float32Weight(w.data, w.dims, hint).name], { transB: 1 });
  }
  if (w.dtype === 'float32') {
    return b.op('MatMul', [x, b.op('Transpose', [b.fileWeight('float32', w.dims, w.file, hint)], { perm: [1, 0] })]);
  }
  const parts = rowChunks(w).map((chunk) => b.op('Gemm', [x, widenRows(b, w, chunk.start, chunk.rows, hint)], { transB: 1 }));
  return parts.length === 1 ? parts[0]! : b.op('Concat', parts, { axis: 1 });
}

/** The whole weight as a float32 value of its dims (for weights used other than in a product, e.g. kv_b split by head). */
export function widened(b: OnnxModelBuilder, w: WeightData, hint: string): string {
  if (w.kind === 'quantized') throw new Error(`${hint}: a quantised weight is only used in products (hold it in another format)`);
  if (w.kind === 'memory') return b.float32Weight(w.data, w.dims, hint).name;
  if (w.dtype === 'float32') return b.fileWeight('float32', w.dims, w.file, hint);
  const rows = w.dims[0]!;
  const flat = widenRows(b, w, 0, rows, hint);
  return w.dims.length === 2 ? flat : b.op('Reshape', [flat, b.int64s(w.dims)]);
}

/** Rows of an embedding table [vocab, hidden] for token ids [T] → [T, hidden] float32; only those rows are widened. */
export function embeddingRows(b: OnnxModelBuilder, ids: string, w: WeightData, hint: string): string {
  if (w.kind === 'quantized') throw new Error(`${hint}: a quantised embedding table is not supported (hold it in another format)`);
  if (w.kind === 'memory') return b.op('Gather', [b.float32Weight(w.data, w.dims, hint).name, ids], { axis: 0 });
  if (w.scales) throw new Error(`${hint}: an embedding table with block scales is not supported`);
  const rows = b.op('Gather', [b.fileWeight(w.dtype, w.dims, w.file, hint, { overridable: true }), ids], { axis: 0 });
  return w.dtype === 'float32' ? rows : b.op('Cast', [rows], { to: 1 });
}

/**
 * MatMulNBits' accuracy_level 4 quantises each activation block to int8 and runs integer dot products
 * (MLAS's SQNBit "CompInt8"). Measured on this machine for a 1024×1024 weight at M = 1/8/32/128:
 * int8 block 128 0.05/0.09/0.26/0.92 ms against 0.75/0.92/1.18/1.76 ms at level 0 (widen to float32)
 * and 0.19/0.18/0.49/1.14 ms for pre-packed float32 MatMul; int4 is alike. The activation rounding
 * it adds is part of the measured accuracy of the format (docs/benchmarks.md).
 */
export const MATMUL_NBITS_ACCURACY_LEVEL = 4;

/** y = x · Wᵀ with W as blockwise codes [N, K]: the codes stay compact and are read by the fused kernel. */
function matMulNBits(b: OnnxModelBuilder, x: string, q: BlockwiseQuantized, hint: string): string {
  const kBlocks = Math.ceil(q.cols / q.block);
  const codes = b.constant({ type: 'uint8', dims: [q.rows, kBlocks, (q.block * q.bits) / 8], bytes: q.codes }, hint);
  const scales = b.constant({ type: 'float32', dims: [q.rows * kBlocks], bytes: new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength) }, `${hint}_scales`);
  return b.op('MatMulNBits', [x, codes, scales], { K: q.cols, N: q.rows, bits: q.bits, block_size: q.block, accuracy_level: MATMUL_NBITS_ACCURACY_LEVEL }, { domain: 'com.microsoft' });
}

interface RowChunk {
  readonly start: number;
  readonly rows: number;
}

/** Row ranges of at most WIDEN_CHUNK_BYTES of float32; with block scales, whole row blocks (the last may be partial). */
function rowChunks(w: Extract<WeightData, { kind: 'file' }>): RowChunk[] {
  const [rows, cols] = w.dims as [number, number];
  const unit = w.scales ? w.scales.block[0] : 1;
  const perChunk = Math.max(unit, Math.floor(WIDEN_CHUNK_BYTES / (4 * cols) / unit) * unit);
  const out: RowChunk[] = [];
  for (let start = 0; start < rows; ) {
    // A partial last row block gets a chunk of its own so every other chunk is a whole number of blocks.
    let n = Math.min(perChunk, rows - start);
    if (w.scales && n % unit !== 0 && n > unit) n -= n % unit;
    out.push({ start, rows: n });
    start += n;
  }
  return out;
}

/** Rows [start, start + rows) of a file-backed 2-D weight as float32 [rows, cols]. */
function widenRows(b: OnnxModelBuilder, w: Extract<WeightData, { kind: 'file' }>, start: number, rows: number, hint: string): string {
  const cols = w.dims.slice(1).reduce((a, d) => a * d, 1);
  const itemBytes = STORED_DTYPE_BYTES[w.dtype];
  const range = { path: w.file.path, offset: w.file.offset + start * cols * itemBytes, length: rows * cols * itemBytes };
  if (!w.scales) return b.op('Cast', [b.fileWeight(w.dtype, [rows, cols], range, hint, { overridable: true })], { to: 1 });
  const [blockRows, blockCols] = w.scales.block;
  const [gridRows, gridCols] = w.scales.grid;
  // The grid row of each widened row, and the grid column of each column: scale [rows, cols] by two Gathers.
  const scales = b.fileWeight('float32', [gridRows, gridCols], w.scales.file, `${hint}_scale_inv`, { overridable: true });
  const rowBlocks = Array.from({ length: rows }, (_, r) => Math.floor((start + r) / blockRows));
  const colBlocks = Array.from({ length: cols }, (_, c) => Math.floor(c / blockCols));
  const codes = b.op('Cast', [b.fileWeight(w.dtype, [rows, cols], range, hint, { overridable: true })], { to: 1 });
  if (rows % blockRows === 0 && cols % blockCols === 0) {
    // Whole blocks: scale by broadcasting [k, 1, gridCols, 1] over [k, blockRows, gridCols, blockCols].
    const k = rows / blockRows;
    const firstBlock = start / blockRows;
    const blockScales = b.op('Slice', [scales, b.int64s([firstBlock]), b.int64s([firstBlock + k]), b.int64s([0])]);
    const shaped = b.op('Reshape', [blockScales, b.int64s([k, 1, gridCols, 1])]);
    const product = b.op('Mul', [b.op('Reshape', [codes, b.int64s([k, blockRows, gridCols, blockCols])]), shaped]);
    return b.op('Reshape', [product, b.int64s([rows, cols])]);
  }
  const perRow = b.op('Gather', [scales, b.int64s(rowBlocks)], { axis: 0 });
  return b.op('Mul', [codes, b.op('Gather', [perRow, b.int64s(colBlocks)], { axis: 1 })]);
}

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · w. */
export function rmsNorm(b: OnnxModelBuilder, x: string, w: Float32Array, eps: number, hint: string): string {
  // onnxruntime's fused kernel (what its optimiser makes of Pow → ReduceMean → Add → Sqrt → Div → Mul, a
  // pattern other spellings miss): one operator instead of six, at each of a layer's four norms.
  return b.op('SimplifiedLayerNormalization', [x, weight(b, w, [w.length], hint)], { axis: -1, epsilon: { float: eps }, stash_type: 1 });
}

export function silu(b: OnnxModelBuilder, x: string): string {
  return b.op('Mul', [x, b.op('Sigmoid', [x])]);
}

export interface SwigluWeights {
  readonly gate: WeightData;
  readonly up: WeightData;
  readonly down: WeightData;
  readonly hidden: number;
  readonly intermediate: number;
}

/**
 * The SwiGLU FFN every DeepSeek MLP and expert uses: down(silu(gate(x)) ⊙ up(x)). Float32 and
 * quantised gate and up are stacked into one [2I, H] weight so x is read once and one matmul streams
 * both (measured ~10 % faster for small expert batches than two matmuls); stored weights stay two
 * products.
 */
export function swiglu(b: OnnxModelBuilder, x: string, w: SwigluWeights, hint: string): string {
  const gateUp = stackedGateUp(b, x, w, hint);
  const h = gateUp ? gatedActivation(b, gateUp, w.intermediate) : b.op('Mul', [silu(b, linear(b, x, w.gate, `${hint}_gate`)), linear(b, x, w.up, `${hint}_up`)]);
  return linear(b, h, w.down, `${hint}_down`);
}

/**
 * x · [gate; up]ᵀ as one product [M, 2I] when gate and up can be stacked into one weight (float32 in
 * memory, or quantised alike); null for stored weights, which stay two products.
 */
export function stackedGateUp(b: OnnxModelBuilder, x: string, w: SwigluWeights, hint: string): string | null {
  const I = w.intermediate;
  if (!gateUpStackable(w)) return null;
  if (w.gate.kind === 'memory' && w.up.kind === 'memory') return linear(b, x, { kind: 'memory', dims: [2 * I, w.hidden], data: stackedValues(w.gate.data, w.up.data) }, `${hint}_gate_up`);
  if (w.gate.kind === 'quantized' && w.up.kind === 'quantized') return matMulNBits(b, x, stackQuantizedRows([w.gate.q, w.up.q]), `${hint}_gate_up`);
  return null;
}

/**
 * [gate; up] as one array: the loader's own when gate and up are adjacent views of one buffer (WeightReader reads
 * float32 gate and up so), else a stacked copy (then both are held twice until the sources are dropped).
 */
function stackedValues(gate: Float32Array, up: Float32Array): Float32Array {
  if (gate.buffer === up.buffer && gate.byteOffset + gate.byteLength === up.byteOffset) return new Float32Array(gate.buffer, gate.byteOffset, gate.length + up.length);
  const gateUp = new Float32Array(gate.length + up.length);
  gateUp.set(gate);
  gateUp.set(up, gate.length);
  return gateUp;
}

/** Whether gate and up can be held as one stacked weight (see stackedGateUp). */
export function gateUpStackable(w: SwigluWeights): boolean {
  if (w.gate.kind === 'memory' && w.up.kind === 'memory') return true;
  return w.gate.kind === 'quantized' && w.up.kind === 'quantized' && w.gate.q.bits === w.up.q.bits && w.gate.q.block === w.up.q.block;
}

/** silu(gate) ⊙ up for a stacked product [M, 2I] (gate columns first) → [M, I]. */
export function gatedActivation(b: OnnxModelBuilder, gateUp: string, intermediate: number): string {
  const [gate, up] = b.opMulti('Split', [gateUp, b.int64s([intermediate, intermediate])], { axis: -1 }, { outputs: 2 }) as [string, string];
  return b.op('Mul', [silu(b, gate), up]);
}
