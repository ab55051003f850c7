import type { ModelConfig } from '@expertmesh/model-config';
import { fp8BlockLayout, readLinearWeight, type SafetensorsCheckpoint, type SafetensorsDtype } from '@expertmesh/weights';
import { memoryWeight, type QuantizedBits, type StoredDtype, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import { readQuantized } from './quantize-at-load.js';
import { resolveWeightFormats, type WeightFormats } from './weight-formats.js';
import {
  attentionNames,
  denseMlpPrefix,
  EMBED_TOKENS,
  FINAL_NORM,
  layerNormNames,
  LM_HEAD,
  mlpNames,
  routedExpertPrefix,
  routerNames,
  sharedExpertsPrefix,
} from './tensor-names.js';

/**
 * How the process holds its weights: `auto` keeps each in the checkpoint's own format (FP8 with its
 * block scales at 1 byte per parameter, BF16 at 2), widened to float32 inside the graphs where a
 * product needs it; `float32` widens everything once at load (exact, 4 bytes per parameter).
 * `int8` and `int4` are lossy and opt-in: every matrix used only in products (attention projections,
 * dense MLPs, shared and routed experts, LM head) is quantised at load, from whatever format the
 * checkpoint stores, to symmetric blockwise codes run by MatMulNBits (QUANTIZED_FORMATS); the
 * embedding table keeps the checkpoint's format, the router gates are held in float32 (small, and they
 * decide routing), and so is kv_b_proj (split by head, not only multiplied: see `matrix`).
 * Each part of the model may take a format of its own (WeightFormats: --attention-weight-dtype and the like).
 */
export type WeightDtype = 'auto' | 'float32' | 'int8' | 'int4';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['auto', 'float32', 'int8', 'int4'];

/**
 * Bits and block (columns along the input dimension) of each quantised format. int8 with 128-column
 * blocks is as accurate as int8 gets here (the activation rounding of MatMulNBits' int8 kernel
 * dominates) and the fastest block; int4 takes 32-column blocks, as llama.cpp's Q4_0, since its
 * 15 levels make the block's largest value matter most. Bytes per parameter: 1.03 and 0.625.
 */
export const QUANTIZED_FORMATS: Readonly<Record<'int8' | 'int4', { readonly bits: QuantizedBits; readonly block: number }>> = {
  int8: { bits: 8, block: 128 },
  int4: { bits: 4, block: 32 },
};

/**
 * Whether a matrix is only ever multiplied (quantisable), also read as values, decides routing, or is
 * kv_b: split by head for absorbed attention (none of the last three are quantised).
 */
type MatrixUse = 'product' | 'values' | 'routing' | 'absorbed';

export class WeightShapeError extends Error {
  override readonly name = 'WeightShapeError';
  constructor(
    readonly tensor: string,
    readonly file: string,
    readonly expected: readonly number[],
    readonly actual: readonly number[],
  ) {
    super(
      `tensor "${tensor}" in ${file} has shape [${actual.join(', ')}] but config.json implies [${expected.join(', ')}]: ` +
        'the checkpoint and its config.json do not belong together',
    );
  }
}

export interface AttentionWeights {
  readonly inputNorm: Float32Array;
  /** q_proj when q_lora_rank is null, otherwise the low-rank pair with its norm. */
  readonly q: { readonly kind: 'full'; readonly proj: WeightData } | { readonly kind: 'lowRank'; readonly a: WeightData; readonly norm: Float32Array; readonly b: WeightData };
  readonly kvA: WeightData;
  readonly kvANorm: Float32Array;
  readonly kvB: WeightData;
  readonly o: WeightData;
}

export interface RouterWeights {
  readonly gate: WeightData;
  readonly scoreCorrectionBias: Float32Array;
}

export type FfnWeights =
  | { readonly kind: 'dense'; readonly mlp: SwigluWeights }
  | { readonly kind: 'moe'; readonly router: RouterWeights; readonly shared: SwigluWeights | null };

export interface LayerWeights {
  readonly attention: AttentionWeights;
  readonly postAttentionNorm: Float32Array;
  readonly ffn: FfnWeights;
}

const STORED: Partial<Record<SafetensorsDtype, StoredDtype>> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16', F8_E4M3: 'float8e4m3fn' };

/**
 * Reads the weights the model needs from a checkpoint, checking every shape against config.json.
 * Large matrices come back as WeightData: with `auto`, a reference to their bytes in the checkpoint
 * file (nothing is read; onnxruntime maps the range); with `float32`, widened values in memory (FP8
 * dequantised with its block scales). Norms and biases are small and always float32. Each matrix is
 * read in its part's format (`formats`: one format for all, or one per part).
 */
export class WeightReader {
  readonly formats: WeightFormats;

  constructor(
    private readonly checkpoint: SafetensorsCheckpoint,
    private readonly config: ModelConfig,
    formats: WeightDtype | WeightFormats = 'auto',
  ) {
    this.formats = resolveWeightFormats(formats);
  }

  /** The routed experts' format. */
  get expertDtype(): WeightDtype {
    return this.formats.experts;
  }

  /** A small tensor (norm weight, bias) as float32 with its shape checked. */
  async tensor(name: string, shape: readonly number[]): Promise<Float32Array> {
    this.checkShape(name, shape);
    return readLinearWeight(this.checkpoint, name, this.blockSize);
  }

  /** A matrix, in the format `dtype` asks for (quantised formats apply to matrices used only in products). */
  async matrix(name: string, shape: readonly number[], use: MatrixUse, dtype: WeightDtype): Promise<WeightData> {
    const info = this.checkShape(name, shape);
    const stored = STORED[info.dtype];
    if (dtype === 'int8' || dtype === 'int4') {
      // Router gates (small, and they decide routing) in float32; the embedding table as stored. kv_b in
      // float32 too: held as stored, both attention graphs widened it, split it by head and transposed it
      // on every run (measured: half the int8 batch-1 attention graphs' time, 10.0 → 5.1 ms a step); as a float32 constant
      // onnxruntime does that once at load. It costs 4 bytes a parameter of a small matrix (the bench
      // preset: 6 MiB more; DeepSeek-R1: 3.8 GiB against its FP8 1 GiB, beside ~650 GiB of int8 experts).
      if (use !== 'product') return this.matrix(name, shape, use, use === 'values' ? 'auto' : 'float32');
      const { bits, block } = QUANTIZED_FORMATS[dtype];
      const [rows, cols] = shape as [number, number];
      return { kind: 'quantized', dims: shape, q: await readQuantized(this.checkpoint, name, this.blockSize, rows, cols, bits, block) };
    }
    if (dtype === 'float32' || !stored) return memoryWeight(await readLinearWeight(this.checkpoint, name, this.blockSize), shape);
    const file = { path: info.file, offset: info.byteOffset, length: info.byteLength };
    if (stored !== 'float8e4m3fn') return { kind: 'file', dtype: stored, dims: shape, file, scales: null };
    const layout = fp8BlockLayout(this.checkpoint, name, this.blockSize);
    // Scales stored in another dtype than F32 are rare; those weights are widened at load instead.
    if (layout.scaleInfo.dtype !== 'F32') return memoryWeight(await readLinearWeight(this.checkpoint, name, this.blockSize), shape);
    const s = layout.scaleInfo;
    return { kind: 'file', dtype: stored, dims: shape, file, scales: { file: { path: s.file, offset: s.byteOffset, length: s.byteLength }, grid: [s.shape[0]!, s.shape[1]!], block: layout.block } };
  }

  private get blockSize(): readonly [number, number] | null {
    return this.config.quantization?.weightBlockSize ?? null;
  }

  private checkShape(name: string, shape: readonly number[]): { dtype: SafetensorsDtype; file: string; byteOffset: number; byteLength: number } {
    const info = this.checkpoint.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new WeightShapeError(name, info.file, shape, info.shape);
    }
    return info;
  }

  embedding(): Promise<WeightData> {
    return this.matrix(EMBED_TOKENS, [this.config.vocabSize, this.config.hiddenSize], 'values', this.formats.other);
  }

  finalNorm(): Promise<Float32Array> {
    return this.tensor(FINAL_NORM, [this.config.hiddenSize]);
  }

  lmHead(): Promise<WeightData> {
    return this.matrix(LM_HEAD, [this.config.vocabSize, this.config.hiddenSize], 'product', this.formats.lmHead);
  }

  async layer(layer: number): Promise<LayerWeights> {
    const c = this.config;
    const norms = layerNormNames(layer);
    return {
      attention: await this.attention(layer),
      postAttentionNorm: await this.tensor(norms.postAttention, [c.hiddenSize]),
      ffn: c.moeLayers.includes(layer)
        ? {
            kind: 'moe',
            router: await this.router(layer),
            shared: c.nSharedExperts > 0 ? await this.swiglu(sharedExpertsPrefix(layer), c.moeIntermediateSize * c.nSharedExperts, this.formats.dense) : null,
          }
        : { kind: 'dense', mlp: await this.swiglu(denseMlpPrefix(layer), c.intermediateSize, this.formats.dense) },
    };
  }

  routedExpert(layer: number, expert: number): Promise<SwigluWeights> {
    return this.swiglu(routedExpertPrefix(layer, expert), this.config.moeIntermediateSize, this.formats.experts);
  }

  private async attention(layer: number): Promise<AttentionWeights> {
    const c = this.config;
    const n = attentionNames(layer);
    const qOut = c.numHeads * c.qkHeadDim;
    const dtype = this.formats.attention;
    const q: AttentionWeights['q'] =
      c.qLoraRank === null
        ? { kind: 'full', proj: await this.matrix(n.qProj, [qOut, c.hiddenSize], 'product', dtype) }
        : {
            kind: 'lowRank',
            a: await this.matrix(n.qAProj, [c.qLoraRank, c.hiddenSize], 'product', dtype),
            norm: await this.tensor(n.qANorm, [c.qLoraRank]),
            b: await this.matrix(n.qBProj, [qOut, c.qLoraRank], 'product', dtype),
          };
    return {
      inputNorm: await this.tensor(layerNormNames(layer).input, [c.hiddenSize]),
      q,
      kvA: await this.matrix(n.kvAProj, [c.kvLoraRank + c.qkRopeHeadDim, c.hiddenSize], 'product', dtype),
      kvANorm: await this.tensor(n.kvANorm, [c.kvLoraRank]),
      kvB: await this.matrix(n.kvBProj, [c.numHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank], 'absorbed', dtype),
      o: await this.matrix(n.oProj, [c.hiddenSize, c.numHeads * c.vHeadDim], 'product', dtype),
    };
  }

  private async router(layer: number): Promise<RouterWeights> {
    const c = this.config;
    const n = routerNames(layer);
    return {
      gate: await this.matrix(n.gate, [c.nRoutedExperts, c.hiddenSize], 'routing', this.formats.other),
      scoreCorrectionBias: await this.tensor(n.scoreCorrectionBias, [c.nRoutedExperts]),
    };
  }

  private async swiglu(prefix: string, intermediate: number, dtype: WeightDtype): Promise<SwigluWeights> {
    const hidden = this.config.hiddenSize;
    const names = mlpNames(prefix);
    const { gate, up } = dtype === 'float32' ? await this.stackedGateUp(names, intermediate, hidden) : { gate: await this.matrix(names.gate, [intermediate, hidden], 'product', dtype), up: await this.matrix(names.up, [intermediate, hidden], 'product', dtype) };
    return {
      gate,
      up,
      down: await this.matrix(names.down, [hidden, intermediate], 'product', dtype),
      hidden,
      intermediate,
    };
  }

  /**
   * Gate and up in float32, widened into the two halves of one array [2I, H]: the stacked weight every SwiGLU
   * product multiplies (stackedGateUp in tensor-ops takes the two adjacent views as they are). Read apart and
   * stacked afterwards, the process would hold both twice while the stacked copy is made (at R1's widths 1 GiB for
   * layer 0's MLP, 117 MB per routed expert).
   */
  private async stackedGateUp(names: { gate: string; up: string }, intermediate: number, hidden: number): Promise<{ gate: WeightData; up: WeightData }> {
    const shape = [intermediate, hidden];
    this.checkShape(names.gate, shape);
    this.checkShape(names.up, shape);
    const size = intermediate * hidden;
    const stacked = new Float32Array(2 * size);
    const [gate, up] = [stacked.subarray(0, size), stacked.subarray(size)];
    await readLinearWeight(this.checkpoint, names.gate, this.blockSize, gate);
    await readLinearWeight(this.checkpoint, names.up, this.blockSize, up);
    return { gate: memoryWeight(gate, shape), up: memoryWeight(up, shape) };
  }
}
