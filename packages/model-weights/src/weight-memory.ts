import type { ModelConfig } from '@expertmesh/model-config';
import type { SafetensorsCheckpoint } from '@expertmesh/weights';
import { QUANTIZED_FORMATS, type WeightDtype } from './model-weights.js';
import { attentionNames, EMBED_TOKENS, LM_HEAD, routerNames } from './tensor-names.js';

/**
 * Predicted memory of each process for a model, in the format its weights are held in: what
 * `expertmesh plan` prints and what the processes report once loaded (routers: dense part, LM head,
 * embeddings and the latent KV cache; shards: their routed experts).
 */

/** How a checkpoint stores each class of matrix; norms and biases are held as float32 whatever their storage. */
export interface StorageLayout {
  readonly projections: StoredMatrixDtype;
  readonly embedding: StoredMatrixDtype;
  readonly lmHead: StoredMatrixDtype;
  readonly gate: StoredMatrixDtype;
  /** FP8 block size (the scales are float32, one per block). */
  readonly block: readonly [number, number] | null;
}

export type StoredMatrixDtype = 'F8_E4M3' | 'BF16' | 'F16' | 'F32';

const TORCH_DTYPE: Record<ModelConfig['torchDtype'], StoredMatrixDtype> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

/** DeepSeek's layout read from config.json: projections FP8 when quantization_config says so; embedding, LM head and router gate in torch_dtype. */
export function layoutFromConfig(config: ModelConfig): StorageLayout {
  const plain = TORCH_DTYPE[config.torchDtype];
  return { projections: config.quantization ? 'F8_E4M3' : plain, embedding: plain, lmHead: plain, gate: plain, block: config.quantization?.weightBlockSize ?? null };
}

/** The layout a checkpoint really has, from the dtypes in its headers. */
export function layoutFromCheckpoint(config: ModelConfig, checkpoint: SafetensorsCheckpoint): StorageLayout {
  const dtype = (name: string): StoredMatrixDtype => {
    const d = checkpoint.info(name).dtype;
    return d === 'F8_E4M3' || d === 'BF16' || d === 'F16' ? d : 'F32';
  };
  const firstMoe = config.moeLayers[0];
  return {
    projections: dtype(attentionNames(0).oProj),
    embedding: dtype(EMBED_TOKENS),
    lmHead: dtype(LM_HEAD),
    gate: firstMoe === undefined ? dtype(attentionNames(0).oProj) : dtype(routerNames(firstMoe).gate),
    block: config.quantization?.weightBlockSize ?? null,
  };
}

/** Bytes one [rows, cols] matrix takes when held as `dtype` asks (a quantised dtype: codes and float32 scales). */
export function matrixBytes(rows: number, cols: number, stored: StoredMatrixDtype, dtype: WeightDtype, block: readonly [number, number] | null): number {
  if (dtype === 'int8' || dtype === 'int4') {
    const q = QUANTIZED_FORMATS[dtype];
    const kBlocks = Math.ceil(cols / q.block);
    return rows * kBlocks * ((q.block * q.bits) / 8 + 4);
  }
  if (dtype === 'float32' || stored === 'F32') return 4 * rows * cols;
  if (stored === 'F8_E4M3') return rows * cols + (block ? 4 * Math.ceil(rows / block[0]) * Math.ceil(cols / block[1]) : 0);
  return 2 * rows * cols;
}

export interface RouterMemory {
  readonly attention: number;
  readonly denseMlp: number;
  readonly sharedExperts: number;
  readonly gates: number;
  readonly norms: number;
  readonly lmHead: number;
  readonly embedding: number;
  /** Sum of the above: the weights a router holds. */
  readonly weights: number;
  readonly kvCache: number;
  readonly total: number;
}

/** Bytes of the latent KV cache for `tokens` (allocated up front in 16-token blocks, float32). */
export function kvCacheBytes(config: ModelConfig, tokens: number): number {
  return Math.ceil(tokens / 16) * 16 * config.numLayers * (config.kvLoraRank + config.qkRopeHeadDim) * 4;
}

export function predictRouterMemory(config: ModelConfig, layout: StorageLayout, dtype: WeightDtype, kvCacheTokens: number): RouterMemory {
  const c = config;
  const H = c.hiddenSize;
  const proj = (rows: number, cols: number): number => matrixBytes(rows, cols, layout.projections, dtype, layout.block);
  // Matrices also read as values stay exact under a quantised dtype (see WeightDtype): the embedding
  // table as stored, the router gates and kv_b in float32.
  const quantized = dtype === 'int8' || dtype === 'int4';
  const asStored: WeightDtype = quantized ? 'auto' : dtype;
  const gateDtype: WeightDtype = quantized ? 'float32' : dtype;
  const swiglu = (inter: number): number => 2 * proj(inter, H) + proj(H, inter);
  const qOut = c.numHeads * c.qkHeadDim;
  const perLayerAttention =
    (c.qLoraRank === null ? proj(qOut, H) : proj(c.qLoraRank, H) + proj(qOut, c.qLoraRank)) +
    proj(c.kvLoraRank + c.qkRopeHeadDim, H) +
    matrixBytes(c.numHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank, layout.projections, gateDtype, layout.block) +
    proj(H, c.numHeads * c.vHeadDim);
  const moe = c.moeLayers.length;
  const dense = c.numLayers - moe;
  const normsPerLayer = 4 * (2 * H + (c.qLoraRank ?? 0) + c.kvLoraRank);
  const m = {
    attention: c.numLayers * perLayerAttention,
    denseMlp: dense * swiglu(c.intermediateSize),
    sharedExperts: c.nSharedExperts > 0 ? moe * swiglu(c.moeIntermediateSize * c.nSharedExperts) : 0,
    gates: moe * (matrixBytes(c.nRoutedExperts, H, layout.gate, gateDtype, layout.block) + 4 * c.nRoutedExperts),
    norms: c.numLayers * normsPerLayer + 4 * H,
    lmHead: matrixBytes(c.vocabSize, H, layout.lmHead, dtype, layout.block),
    embedding: matrixBytes(c.vocabSize, H, layout.embedding, asStored, layout.block),
  };
  const weights = Object.values(m).reduce((a, b) => a + b, 0);
  const kvCache = kvCacheBytes(c, kvCacheTokens);
  return { ...m, weights, kvCache, total: weights + kvCache };
}

/** Bytes of one routed expert of one layer as held. */
export function predictExpertBytes(config: ModelConfig, layout: StorageLayout, dtype: WeightDtype): number {
  const I = config.moeIntermediateSize;
  const H = config.hiddenSize;
  return 2 * matrixBytes(I, H, layout.projections, dtype, layout.block) + matrixBytes(H, I, layout.projections, dtype, layout.block);
}
