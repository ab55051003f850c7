/**
 * Converts one of our DeepSeek-V3 checkpoints (Hugging Face layout) to GGUF for llama.cpp's
 * `deepseek2` architecture, in F32, BF16 or Q8_0: the keys and tensor names of llama.cpp's
 * convert_hf_to_gguf.py (DeepseekV2Model) and gguf-py, learnt from them, written by us:
 *   - kv_b_proj split per head into attn_k_b (transposed: [heads][rank][nope]) and attn_v_b;
 *   - routed experts stacked into ffn_{gate,up,down}_exps [experts][out][in];
 *   - norms, biases and the router gate (ffn_gate_inp) stay F32 in every format, as there;
 *   - the multi-token-prediction layer is left out, as there; head_count_kv is 1 (MLA as MQA).
 * The vocabulary is a stand-in (the benchmark feeds token ids to both engines, never text): GPT-2's
 * 256 byte tokens, then one placeholder per remaining id, no merges ("none" would be truer, but
 * node-llama-cpp tokenizes on load and llama.cpp asserts there is a tokenizer).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { attentionNames, denseMlpPrefix, EMBED_TOKENS, FINAL_NORM, layerNormNames, LM_HEAD, mlpNames, routedExpertPrefix, routerNames, sharedExpertsPrefix } from '@expertmesh/model-weights';
import { float32ToBf16Bytes, readLinearWeight, SafetensorsCheckpoint } from '@expertmesh/weights';
import { quantizeQ8_0, writeGguf, type GgmlType, type GgufTensor, type GgufValue } from './gguf-writer.js';

export type GgufFormat = 'F32' | 'BF16' | 'Q8_0';
const FILE_TYPE: Record<GgufFormat, number> = { F32: 0, BF16: 32, Q8_0: 7 };

const bytesOf = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

function encode(values: Float32Array, type: GgmlType): Uint8Array {
  if (type === 'F32') return bytesOf(values);
  if (type === 'BF16') return float32ToBf16Bytes(values);
  if (type === 'Q8_0') return quantizeQ8_0(values);
  throw new Error(`no encoder for ${type}`);
}

/** GPT-2's byte-to-character table for ids 0–255 (so any text maps to byte tokens), then "<tN>". */
function standInVocabulary(size: number): string[] {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  const bytes = Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++));
  return Array.from({ length: size }, (_, i) => (i < 256 ? bytes[i]! : `<t${i}>`));
}

function metadata(c: ModelConfig, format: GgufFormat, hf: Record<string, unknown>): Record<string, GgufValue> {
  const a = 'deepseek2';
  const rope = hf.rope_scaling as { type?: string; rope_type?: string; factor?: number; original_max_position_embeddings?: number; beta_fast?: number; beta_slow?: number; mscale_all_dim?: number } | null | undefined;
  const m: Record<string, GgufValue> = {
    'general.architecture': { str: a },
    'general.name': { str: 'expertmesh-bench' },
    'general.file_type': { u32: FILE_TYPE[format] },
    [`${a}.block_count`]: { u32: c.numLayers },
    [`${a}.context_length`]: { u32: c.maxPositionEmbeddings },
    [`${a}.embedding_length`]: { u32: c.hiddenSize },
    [`${a}.feed_forward_length`]: { u32: c.intermediateSize },
    [`${a}.attention.head_count`]: { u32: c.numHeads },
    [`${a}.attention.head_count_kv`]: { u32: 1 },
    [`${a}.rope.freq_base`]: { f32: c.ropeTheta },
    [`${a}.attention.layer_norm_rms_epsilon`]: { f32: c.rmsNormEps },
    [`${a}.expert_count`]: { u32: c.nRoutedExperts },
    [`${a}.expert_used_count`]: { u32: c.numExpertsPerTok },
    [`${a}.expert_group_count`]: { u32: c.nGroup },
    [`${a}.expert_group_used_count`]: { u32: c.topkGroup },
    [`${a}.expert_gating_func`]: { u32: 2 }, // sigmoid
    [`${a}.leading_dense_block_count`]: { u32: c.numLayers - c.moeLayers.length },
    [`${a}.vocab_size`]: { u32: c.vocabSize },
    [`${a}.attention.kv_lora_rank`]: { u32: c.kvLoraRank },
    [`${a}.attention.key_length`]: { u32: c.kvLoraRank + c.qkRopeHeadDim },
    [`${a}.attention.value_length`]: { u32: c.kvLoraRank },
    [`${a}.attention.key_length_mla`]: { u32: c.qkNopeHeadDim + c.qkRopeHeadDim },
    [`${a}.attention.value_length_mla`]: { u32: c.vHeadDim },
    [`${a}.expert_feed_forward_length`]: { u32: c.moeIntermediateSize },
    [`${a}.expert_shared_count`]: { u32: c.nSharedExperts },
    [`${a}.expert_weights_scale`]: { f32: c.routedScalingFactor },
    [`${a}.rope.dimension_count`]: { u32: c.qkRopeHeadDim },
    'tokenizer.ggml.model': { str: 'gpt2' },
    'tokenizer.ggml.pre': { str: 'default' },
    'tokenizer.ggml.tokens': { strs: standInVocabulary(c.vocabSize) },
    'tokenizer.ggml.token_type': { i32s: new Array<number>(c.vocabSize).fill(1) },
    'tokenizer.ggml.merges': { strs: [] },
    'tokenizer.ggml.bos_token_id': { u32: (hf.bos_token_id as number | undefined) ?? 0 },
    'tokenizer.ggml.eos_token_id': { u32: (hf.eos_token_id as number | undefined) ?? 1 },
  };
  if (c.qLoraRank !== null) m[`${a}.attention.q_lora_rank`] = { u32: c.qLoraRank };
  if (c.normTopkProb) m[`${a}.expert_weights_norm`] = { bool: true };
  if (rope && (rope.type ?? rope.rope_type) === 'yarn' && rope.factor !== undefined) {
    m[`${a}.rope.scaling.type`] = { str: 'yarn' };
    m[`${a}.rope.scaling.factor`] = { f32: rope.factor };
    m[`${a}.rope.scaling.original_context_length`] = { u32: rope.original_max_position_embeddings ?? 4096 };
    if (rope.beta_fast !== undefined) m[`${a}.rope.scaling.yarn_beta_fast`] = { f32: rope.beta_fast };
    if (rope.beta_slow !== undefined) m[`${a}.rope.scaling.yarn_beta_slow`] = { f32: rope.beta_slow };
    // convert_hf_to_gguf writes 0.1 · mscale_all_dim here and llama.cpp divides the 0.1 back out.
    if (rope.mscale_all_dim !== undefined) m[`${a}.rope.scaling.yarn_log_multiplier`] = { f32: 0.1 * rope.mscale_all_dim };
  }
  return m;
}

export async function convertToGguf(modelDir: string, outPath: string, format: GgufFormat): Promise<void> {
  const config = await loadModelConfig(modelDir);
  const hf = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const ck = await SafetensorsCheckpoint.open(modelDir);
  const block = config.quantization?.weightBlockSize ?? null;
  const read = (name: string): Promise<Float32Array> => readLinearWeight(ck, name, block);
  const c = config;
  const H = c.hiddenSize;
  const tensors: GgufTensor[] = [];
  const add = (name: string, ne: number[], type: GgmlType, values: () => Promise<Float32Array>): void => {
    tensors.push({ name, ne, type, data: async () => encode(await values(), type) });
  };
  const matrix = (name: string, source: string, rows: number, cols: number): void => add(name, [cols, rows], format, () => read(source));
  const norm = (name: string, source: string, n: number): void => add(name, [n], 'F32', () => read(source));

  add('token_embd.weight', [H, c.vocabSize], format, () => read(EMBED_TOKENS));
  norm('output_norm.weight', FINAL_NORM, H);
  matrix('output.weight', LM_HEAD, c.vocabSize, H);
  for (let l = 0; l < c.numLayers; l++) {
    const b = `blk.${l}`;
    const n = attentionNames(l);
    norm(`${b}.attn_norm.weight`, layerNormNames(l).input, H);
    norm(`${b}.ffn_norm.weight`, layerNormNames(l).postAttention, H);
    if (c.qLoraRank !== null) {
      norm(`${b}.attn_q_a_norm.weight`, n.qANorm, c.qLoraRank);
      matrix(`${b}.attn_q_a.weight`, n.qAProj, c.qLoraRank, H);
      matrix(`${b}.attn_q_b.weight`, n.qBProj, c.numHeads * c.qkHeadDim, c.qLoraRank);
    } else {
      matrix(`${b}.attn_q.weight`, n.qProj, c.numHeads * c.qkHeadDim, H);
    }
    norm(`${b}.attn_kv_a_norm.weight`, n.kvANorm, c.kvLoraRank);
    matrix(`${b}.attn_kv_a_mqa.weight`, n.kvAProj, c.kvLoraRank + c.qkRopeHeadDim, H);
    const { numHeads: nH, qkNopeHeadDim: nope, vHeadDim: v, kvLoraRank: R } = c;
    // kv_b [nH·(nope+v), R] → k_b [nH][R][nope] (each head's key rows transposed) and v_b [nH][v][R].
    add(`${b}.attn_k_b.weight`, [nope, R, nH], format, async () => {
      const kvb = await read(n.kvBProj);
      const out = new Float32Array(nH * R * nope);
      for (let h = 0; h < nH; h++) for (let r = 0; r < R; r++) for (let j = 0; j < nope; j++) out[(h * R + r) * nope + j] = kvb[(h * (nope + v) + j) * R + r]!;
      return out;
    });
    add(`${b}.attn_v_b.weight`, [R, v, nH], format, async () => {
      const kvb = await read(n.kvBProj);
      const out = new Float32Array(nH * v * R);
      for (let h = 0; h < nH; h++) out.set(kvb.subarray((h * (nope + v) + nope) * R, (h + 1) * (nope + v) * R), h * v * R);
      return out;
    });
    matrix(`${b}.attn_output.weight`, n.oProj, H, nH * v);
    if (!c.moeLayers.includes(l)) {
      const mlp = mlpNames(denseMlpPrefix(l));
      matrix(`${b}.ffn_gate.weight`, mlp.gate, c.intermediateSize, H);
      matrix(`${b}.ffn_up.weight`, mlp.up, c.intermediateSize, H);
      matrix(`${b}.ffn_down.weight`, mlp.down, H, c.intermediateSize);
      continue;
    }
    const router = routerNames(l);
    add(`${b}.ffn_gate_inp.weight`, [H, c.nRoutedExperts], 'F32', () => read(router.gate));
    add(`${b}.exp_probs_b.bias`, [c.nRoutedExperts], 'F32', () => read(router.scoreCorrectionBias));
    const I = c.moeIntermediateSize;
    const stacked = (part: 'gate' | 'up' | 'down', rows: number, cols: number) => async (): Promise<Float32Array> => {
      const out = new Float32Array(c.nRoutedExperts * rows * cols);
      for (let e = 0; e < c.nRoutedExperts; e++) out.set(await read(mlpNames(routedExpertPrefix(l, e))[part]), e * rows * cols);
      return out;
    };
    add(`${b}.ffn_gate_exps.weight`, [H, I, c.nRoutedExperts], format, stacked('gate', I, H));
    add(`${b}.ffn_up_exps.weight`, [H, I, c.nRoutedExperts], format, stacked('up', I, H));
    add(`${b}.ffn_down_exps.weight`, [I, H, c.nRoutedExperts], format, stacked('down', H, I));
    if (c.nSharedExperts > 0) {
      const shared = mlpNames(sharedExpertsPrefix(l));
      const Is = I * c.nSharedExperts;
      matrix(`${b}.ffn_gate_shexp.weight`, shared.gate, Is, H);
      matrix(`${b}.ffn_up_shexp.weight`, shared.up, Is, H);
      matrix(`${b}.ffn_down_shexp.weight`, shared.down, H, Is);
    }
  }
  try {
    await writeGguf(outPath, metadata(c, format, hf), tensors);
  } finally {
    await ck.close();
  }
}
