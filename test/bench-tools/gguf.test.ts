import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { convertToGguf } from '../../bench/gguf-from-checkpoint.js';
import { ggmlBytes, quantizeQ8_0, writeGguf } from '../../bench/gguf-writer.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * The llama.cpp benchmark's own GGUF writer and deepseek2 converter, read back with a minimal GGUF
 * reader written from the format's description: header, metadata, tensor directory, 32-byte aligned
 * data; Q8_0 blocks within half a step; kv_b split into per-head k_b (transposed) and v_b.
 */
interface ReadBack {
  readonly meta: Map<string, unknown>;
  readonly tensors: Map<string, { ne: number[]; type: number; bytes: Buffer }>;
}

function readGguf(buf: Buffer): ReadBack {
  let at = 0;
  const u32 = (): number => ((at += 4), buf.readUInt32LE(at - 4));
  const u64 = (): number => ((at += 8), Number(buf.readBigUInt64LE(at - 8)));
  const str = (): string => {
    const n = u64();
    at += n;
    return buf.toString('utf8', at - n, at);
  };
  const value = (type: number): unknown => {
    if (type === 4) return u32();
    if (type === 5) return ((at += 4), buf.readInt32LE(at - 4));
    if (type === 6) return ((at += 4), buf.readFloatLE(at - 4));
    if (type === 7) return ((at += 1), buf[at - 1] === 1);
    if (type === 8) return str();
    if (type === 9) {
      const t = u32();
      return Array.from({ length: u64() }, () => value(t));
    }
    throw new Error(`value type ${type}`);
  };
  expect(buf.toString('ascii', 0, 4)).toBe('GGUF');
  at = 4;
  expect(u32()).toBe(3);
  const nTensors = u64();
  const nKv = u64();
  const meta = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) {
    const k = str();
    meta.set(k, value(u32()));
  }
  const infos = Array.from({ length: nTensors }, () => {
    const name = str();
    const ne = Array.from({ length: u32() }, () => u64());
    return { name, ne, type: u32(), offset: u64() };
  });
  const dataStart = Math.ceil(at / 32) * 32;
  const tensors = new Map<string, { ne: number[]; type: number; bytes: Buffer }>();
  for (const t of infos) {
    expect(t.offset % 32).toBe(0);
    const count = t.ne.reduce((a, d) => a * d, 1);
    const size = ggmlBytes(t.type === 0 ? 'F32' : t.type === 30 ? 'BF16' : 'Q8_0', count);
    tensors.set(t.name, { ne: t.ne, type: t.type, bytes: buf.subarray(dataStart + t.offset, dataStart + t.offset + size) });
  }
  return { meta, tensors };
}

describe('GGUF for llama.cpp', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('gguf');
  });
  afterAll(async () => dir?.remove());

  it('Q8_0 blocks: a float16 scale max|x|/127 and codes within half a step', () => {
    const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * (i < 32 ? 1 : 0.01));
    const q = Buffer.from(quantizeQ8_0(x));
    expect(q.length).toBe(68);
    for (let b = 0; b < 2; b++) {
      const half = q.readUInt16LE(b * 34);
      const d = 2 ** (((half >> 10) & 0x1f) - 15) * (1 + (half & 0x3ff) / 1024);
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
      expect(Math.abs(d - amax / 127) / (amax / 127)).toBeLessThan(1e-3);
      for (let i = 0; i < 32; i++) expect(Math.abs(q.readInt8(b * 34 + 2 + i) * d - x[b * 32 + i]!)).toBeLessThanOrEqual(d / 2 + 1e-3 * amax / 127);
    }
  });

  it('a written file reads back: metadata, dims, aligned data', async () => {
    const path = join(dir.path, 'small.gguf');
    const a = Float32Array.from([1, 2, 3]);
    await writeGguf(path, { 'x.count': { u32: 7 }, 'x.eps': { f32: 0.5 }, 'x.flag': { bool: true }, 'x.names': { strs: ['a', 'bc'] } }, [
      { name: 'a', ne: [3], type: 'F32', data: async () => new Uint8Array(a.buffer) },
      { name: 'b', ne: [32, 2], type: 'Q8_0', data: async () => quantizeQ8_0(new Float32Array(64).fill(0.25)) },
    ]);
    const back = readGguf(await readFile(path));
    expect(back.meta.get('x.count')).toBe(7);
    expect(back.meta.get('x.eps')).toBe(0.5);
    expect(back.meta.get('x.flag')).toBe(true);
    expect(back.meta.get('x.names')).toEqual(['a', 'bc']);
    expect([...new Float32Array(back.tensors.get('a')!.bytes.buffer.slice(back.tensors.get('a')!.bytes.byteOffset, back.tensors.get('a')!.bytes.byteOffset + 12))]).toEqual([1, 2, 3]);
    expect(back.tensors.get('b')!.ne).toEqual([32, 2]);
    expect(back.tensors.get('b')!.bytes.readInt8(2)).toBe(127);
  });

  it('a tiny checkpoint converts to deepseek2 F32 with the names, shapes and kv_b split llama.cpp loads', async () => {
    const model = join(dir.path, 'tiny');
    await makeCheckpoint({ preset: 'tiny', outDir: model, dtype: 'float32', seed: 5 });
    const path = join(dir.path, 'tiny.gguf');
    await convertToGguf(model, path, 'F32');
    const c = await loadModelConfig(model);
    const back = readGguf(await readFile(path));
    expect(back.meta.get('general.architecture')).toBe('deepseek2');
    expect(back.meta.get('deepseek2.block_count')).toBe(c.numLayers);
    expect(back.meta.get('deepseek2.expert_count')).toBe(c.nRoutedExperts);
    expect(back.meta.get('deepseek2.expert_gating_func')).toBe(2);
    expect((back.meta.get('tokenizer.ggml.tokens') as string[]).length).toBe(c.vocabSize);
    const moe = c.moeLayers[0]!;
    expect(back.tensors.get(`blk.${moe}.ffn_gate_exps.weight`)!.ne).toEqual([c.hiddenSize, c.moeIntermediateSize, c.nRoutedExperts]);
    expect(back.tensors.has(`blk.${c.numLayers}.attn_norm.weight`)).toBe(false); // no MTP layer
    // k_b[h][r][j] = kv_b[h·(nope+v) + j][r]; v_b[h][i][r] = kv_b[h·(nope+v) + nope + i][r].
    const ck = await SafetensorsCheckpoint.open(model);
    const kvb = await ck.readFloat32('model.layers.0.self_attn.kv_b_proj.weight');
    await ck.close();
    const { numHeads: nH, qkNopeHeadDim: nope, vHeadDim: v, kvLoraRank: R } = c;
    const f32 = (b: Buffer): Float32Array => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
    const kb = f32(back.tensors.get('blk.0.attn_k_b.weight')!.bytes);
    const vb = f32(back.tensors.get('blk.0.attn_v_b.weight')!.bytes);
    expect(back.tensors.get('blk.0.attn_k_b.weight')!.ne).toEqual([nope, R, nH]);
    for (const [h, r, j] of [[0, 0, 1], [nH - 1, R - 1, nope - 1], [1, 3, 2]] as const) expect(kb[(h * R + r) * nope + j]).toBe(kvb[(h * (nope + v) + j) * R + r]);
    for (const [h, i, r] of [[0, 0, 1], [nH - 1, v - 1, R - 1], [2, 1, 5]] as const) expect(vb[(h * v + i) * R + r]).toBe(kvb[(h * (nope + v) + nope + i) * R + r]);
  });

  it('BF16: the matrices hold each float32 value rounded to nearest-even bfloat16; norms and router gates stay F32', async () => {
    const model = join(dir.path, 'tiny-bf16');
    await makeCheckpoint({ preset: 'tiny', outDir: model, dtype: 'float32', seed: 6 });
    const path = join(dir.path, 'tiny-bf16.gguf');
    await convertToGguf(model, path, 'BF16');
    const c = await loadModelConfig(model);
    const back = readGguf(await readFile(path));
    expect(back.meta.get('general.file_type')).toBe(32); // LLAMA_FTYPE_MOSTLY_BF16
    const moe = c.moeLayers[0]!;
    // bfloat16 is float32's upper half: round the lower 16 bits to nearest, ties to even (no NaNs in weights).
    const toBf16 = (x: number): number => {
      const bits = new Uint32Array(Float32Array.of(x).buffer)[0]!;
      return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
    };
    const ck = await SafetensorsCheckpoint.open(model);
    try {
      const pairs = [
        ['token_embd.weight', 'model.embed_tokens.weight'],
        ['blk.0.attn_output.weight', 'model.layers.0.self_attn.o_proj.weight'],
        [`blk.${moe}.ffn_down_shexp.weight`, `model.layers.${moe}.mlp.shared_experts.down_proj.weight`],
      ] as const;
      for (const [gguf, source] of pairs) {
        const t = back.tensors.get(gguf)!;
        expect(t.type, gguf).toBe(30);
        const original = await ck.readFloat32(source);
        expect(t.bytes.length).toBe(2 * original.length);
        let worst = 0;
        const wrong: number[] = [];
        for (let i = 0; i < original.length; i++) {
          const half = t.bytes.readUInt16LE(2 * i);
          if (half !== toBf16(original[i]!)) wrong.push(i);
          // Read back as float32: within half a bfloat16 step (8 significant bits) of the original.
          const value = new Float32Array(Uint32Array.of(half << 16).buffer)[0]!;
          if (original[i] !== 0) worst = Math.max(worst, Math.abs(value - original[i]!) / Math.abs(original[i]!));
        }
        expect(wrong, `${gguf}: elements not rounded to nearest-even bfloat16`).toEqual([]);
        expect(worst).toBeGreaterThan(0); // the test data is not already bfloat16
        expect(worst).toBeLessThanOrEqual(2 ** -8);
      }
      // Experts stacked [experts][out][in], each expert's rows at its offset.
      const exps = back.tensors.get(`blk.${moe}.ffn_up_exps.weight`)!;
      expect(exps.type).toBe(30);
      const e = c.nRoutedExperts - 1;
      const up = await ck.readFloat32(`model.layers.${moe}.mlp.experts.${e}.up_proj.weight`);
      for (const i of [0, 1, up.length - 1]) expect(exps.bytes.readUInt16LE(2 * (e * up.length + i))).toBe(toBf16(up[i]!));
    } finally {
      await ck.close();
    }
    for (const name of ['output_norm.weight', 'blk.0.attn_norm.weight', `blk.${moe}.ffn_gate_inp.weight`, `blk.${moe}.exp_probs_b.bias`]) expect(back.tensors.get(name)!.type, name).toBe(0);
  });
});
