import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import type { ExpertPairs } from '@expertmesh/routed-experts';
import { f32, floatData, Graph, i64, memoryWeight, OnnxModelBuilder, quantizeBlockwise, swiglu, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import { NativeExpertProgram } from '@expertmesh/expert-kernel';
import { ExpertNotHeldError, LocalRoutedExperts, type ExpertWeightSource } from '../src/index.js';

/**
 * The layer graph (each expert's rows gathered and its outputs weighted outside the graph) must give
 * bit for bit what the per-expert path gave: Gather the expert's rows, SwiGLU, multiply by the routing
 * weights in float32, add into the token. Float32 weights are also held to float64 math. (Stored FP8
 * experts, behind an If, are held to the reference in test/correctness.)
 */
const config = parseModelConfig({ ...getPreset('bench').config, hidden_size: 64, moe_intermediate_size: 32 });
const H = config.hiddenSize;
const I = config.moeIntermediateSize;
const LAYER = config.moeLayers[0]!;

/** Weight value of expert e's matrix m at row r, column c: multiples of 1/1024 in [-1/16, 1/16). */
const pattern = (e: number, m: number, r: number, c: number): number => ((((e * 7 + m * 13 + r * 31 + c * 17) % 127) - 63) / 1024);
const matrix = (e: number, m: number, rows: number, cols: number): Float32Array => Float32Array.from({ length: rows * cols }, (_, i) => pattern(e, m, Math.floor(i / cols), i % cols));

function source(format: 'float32' | 'int8' | 'int4'): ExpertWeightSource {
  const held = (w: Float32Array, rows: number, cols: number): WeightData =>
    format === 'float32' ? memoryWeight(w, [rows, cols]) : { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(w, rows, cols, format === 'int8' ? 8 : 4, 32) };
  return {
    expertDtype: format,
    routedExpert: async (_layer, e): Promise<SwigluWeights> => ({ gate: held(matrix(e, 0, I, H), I, H), up: held(matrix(e, 1, I, H), I, H), down: held(matrix(e, 2, H, I), H, I), hidden: H, intermediate: I }),
  };
}

/** T tokens, each with topK distinct experts (some experts chosen by many tokens, most by none). */
function pairs(T: number): ExpertPairs {
  const k = config.numExpertsPerTok;
  const expertIds = Int32Array.from({ length: T * k }, (_, i) => (Math.floor(i / k) * 3 + (i % k) * (i % k) * 5) % config.nRoutedExperts);
  return { tokenRows: Int32Array.from({ length: T * k }, (_, i) => Math.floor(i / k)), expertIds, weights: Float32Array.from({ length: T * k }, (_, i) => 0.05 + ((i * 37) % 11) / 40) };
}
const hidden = (T: number): Float32Array => Float32Array.from({ length: T * H }, (_, i) => Math.sin(i * 0.731) / 2);

/** The per-expert path: one graph per expert (Gather rows, SwiGLU, Mul by the weights), outputs added in expert order. */
async function perExpert(format: 'float32' | 'int8', x: Float32Array, T: number, p: ExpertPairs): Promise<Float32Array> {
  const out = new Float32Array(T * H);
  const chosen = [...new Set(p.expertIds)].sort((a, b) => a - b);
  for (const e of chosen) {
    const idx = [...p.expertIds.keys()].filter((i) => p.expertIds[i] === e);
    const b = new OnnxModelBuilder(`expert${e}`);
    const xIn = b.input('x', 'float32', ['T', H]);
    const rows = b.input('rows', 'int64', ['M']);
    const w = b.input('w', 'float32', ['M', 1]);
    b.alias(b.op('Mul', [swiglu(b, b.op('Gather', [xIn, rows], { axis: 0 }), await source(format).routedExpert(LAYER, e), `expert${e}`), w]), 'y');
    b.output('y', 'float32', ['M', H]);
    const graph = await Graph.create(`expert${e}`, b.build());
    const y = floatData((await graph.run({ x: f32(x, [T, H]), rows: i64(BigInt64Array.from(idx, (i) => BigInt(p.tokenRows[i]!)), [idx.length]), w: f32(Float32Array.from(idx, (i) => p.weights[i]!), [idx.length, 1]) })).y, 'expert', 'y');
    await graph.release();
    idx.forEach((i, k) => {
      for (let c = 0; c < H; c++) out[p.tokenRows[i]! * H + c] += y[k * H + c]!;
    });
  }
  return out;
}

/**
 * The per-expert path on the native kernel: one program per expert, its rows gathered here, its outputs weighted in
 * float32 (Math.fround) and added in JavaScript in expert order, as computePairs did before the addon took both over.
 */
async function perExpertNative(format: 'float32' | 'int8' | 'int4', x: Float32Array, T: number, p: ExpertPairs): Promise<Float32Array> {
  const out = new Float32Array(T * H);
  for (const e of [...new Set(p.expertIds)].sort((a, b) => a - b)) {
    const idx = [...p.expertIds.keys()].filter((i) => p.expertIds[i] === e);
    const program = NativeExpertProgram.create(`expert${e}`, [await source(format).routedExpert(LAYER, e)], { threads: 1 });
    const rows = new Float32Array(idx.length * H);
    idx.forEach((i, k) => rows.set(x.subarray(p.tokenRows[i]! * H, (p.tokenRows[i]! + 1) * H), k * H));
    const y = program.run(rows, [idx.length]);
    program.release();
    idx.forEach((i, k) => {
      for (let c = 0; c < H; c++) out[p.tokenRows[i]! * H + c] += Math.fround(p.weights[i]! * y[k * H + c]!);
    });
  }
  return out;
}

describe('the MoE layer on the native kernel (rows read by index, outputs weighted and added in the addon) against the per-expert path', () => {
  for (const format of ['float32', 'int8', 'int4'] as const) {
    // The last call is smaller than the one before it: its outputs go to the part of a scratch buffer the larger call left written.
    it(`${format}, 1, 8, 32 and again 8 tokens: bit for bit`, async () => {
      const layer = await LocalRoutedExperts.load(config, source(format), { executionProvider: 'cpu', intraOpThreads: 2, expertKernel: 'native' }, (l) => (l === LAYER ? Array.from({ length: config.nRoutedExperts }, (_, e) => e) : []));
      try {
        for (const T of [1, 8, 32, 8]) {
          const x = hidden(T);
          const p = pairs(T);
          const got = await layer.computePairs(LAYER, x, T, p);
          expect(got).toEqual(await perExpertNative(format, x, T, p));
          expect(got.some((v) => v !== 0)).toBe(true);
        }
      } finally {
        await layer.close();
      }
    });
  }
});

describe('the MoE layer graph against the per-expert path', () => {
  const layers = new Map<string, LocalRoutedExperts>();
  beforeAll(async () => {
    for (const format of ['float32', 'int8'] as const) layers.set(format, await LocalRoutedExperts.load(config, source(format), { executionProvider: 'cpu', intraOpThreads: 0, expertKernel: 'onnxruntime' }, (layer) => (layer === LAYER ? Array.from({ length: config.nRoutedExperts }, (_, e) => e) : [])));
    // The native kernel's float32 path, held to the same float64 math below (the default, auto, picks it).
    layers.set('float32 native', await LocalRoutedExperts.load(config, source('float32'), { executionProvider: 'cpu', intraOpThreads: 0 }, (layer) => (layer === LAYER ? Array.from({ length: config.nRoutedExperts }, (_, e) => e) : [])));
  });
  afterAll(async () => {
    for (const layer of layers.values()) await layer.close();
  });

  for (const format of ['float32', 'int8'] as const) {
    for (const T of [1, 8, 32]) {
      it(`${format}, ${T} tokens: bit for bit`, async () => {
        const x = hidden(T);
        const p = pairs(T);
        const got = await layers.get(format)!.computePairs(LAYER, x, T, p);
        expect(got).toEqual(await perExpert(format, x, T, p));
        expect(got.some((v) => v !== 0)).toBe(true);
      });
    }
  }

  it('a layer holding one expert (a graph without the Split of its rows) gives the per-expert path bit for bit', async () => {
    const one = await LocalRoutedExperts.load(config, source('int8'), { executionProvider: 'cpu', intraOpThreads: 0, expertKernel: 'onnxruntime' }, (layer) => (layer === LAYER ? [5] : []));
    try {
      const T = 3;
      const p: ExpertPairs = { tokenRows: Int32Array.of(2, 0), expertIds: Int32Array.of(5, 5), weights: Float32Array.of(0.75, 0.3) };
      const got = await one.computePairs(LAYER, hidden(T), T, p);
      expect(got).toEqual(await perExpert('int8', hidden(T), T, p));
      expect(got.subarray(H, 2 * H).every((v) => v === 0)).toBe(true);
    } finally {
      await one.close();
    }
  });

  it.each(['float32', 'float32 native'])('%s keeps the float64 reference within 1e-4', async (key) => {
    const T = 8;
    const x = hidden(T);
    const p = pairs(T);
    expect(layers.get(key)!.expertKernel).toBe(key === 'float32' ? 'onnxruntime' : 'native');
    const got = await layers.get(key)!.computePairs(LAYER, x, T, p);
    const want = new Float64Array(T * H);
    for (let i = 0; i < p.expertIds.length; i++) {
      const e = p.expertIds[i]!;
      const row = x.subarray(p.tokenRows[i]! * H, (p.tokenRows[i]! + 1) * H);
      const act = Array.from({ length: I }, (_, r) => {
        let g = 0;
        let u = 0;
        for (let c = 0; c < H; c++) {
          g += pattern(e, 0, r, c) * row[c]!;
          u += pattern(e, 1, r, c) * row[c]!;
        }
        return (g / (1 + Math.exp(-g))) * u;
      });
      for (let o = 0; o < H; o++) {
        let y = 0;
        for (let r = 0; r < I; r++) y += pattern(e, 2, o, r) * act[r]!;
        want[p.tokenRows[i]! * H + o]! += p.weights[i]! * y;
      }
    }
    for (let j = 0; j < want.length; j++) expect(Math.abs(got[j]! - want[j]!)).toBeLessThan(1e-4);
  });

  it('rejects a token row outside the batch and an expert not held', async () => {
    const layer = layers.get('float32')!;
    await expect(layer.computePairs(LAYER, hidden(2), 2, { tokenRows: Int32Array.of(0, 2), expertIds: Int32Array.of(1, 2), weights: Float32Array.of(0.5, 0.5) })).rejects.toThrow(RangeError);
    await expect(layer.computePairs(LAYER + 1, hidden(1), 1, { tokenRows: Int32Array.of(0), expertIds: Int32Array.of(1), weights: Float32Array.of(1) })).rejects.toThrow(ExpertNotHeldError);
  });
});
