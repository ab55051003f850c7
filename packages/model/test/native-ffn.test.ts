import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION, Graph, f32, floatData, memoryWeight, quantizeBlockwise, type ExpertKernel, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import type { WeightDtype } from '@expertmesh/model-weights';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { DeepseekV3Model, LatentKvCache, type ForwardSegment } from '../src/index.js';
import { buildMlpGraph } from '../src/graphs/mlp-graph.js';
import { NativeFfn } from '../src/native-ffn.js';

function seeded(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 48271) % 2147483647) / 2147483647 - 0.5) * scale);
}

/** A dense-MLP-shaped SwiGLU (hidden 256, intermediate 704: not a multiple of the kernel's 64-row tasks) as float32 or int8. */
function swigluWeights(format: 'float32' | 'int8'): SwigluWeights {
  const H = 256;
  const I = 704;
  const matrix = (rows: number, cols: number, seed: number): WeightData => {
    const values = seeded(rows * cols, seed, 0.2);
    return format === 'float32' ? memoryWeight(values, [rows, cols]) : { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(values, rows, cols, 8, 128) };
  };
  return { hidden: H, intermediate: I, gate: matrix(I, H, 3), up: matrix(I, H, 5), down: matrix(H, I, 7) };
}

describe('a layer\'s own FFN on the native kernel', () => {
  it.each([
    ['float32', 1e-5],
    ['int8', 1e-4],
  ] as const)('%s: gives the onnxruntime graph\'s outputs within float32 rounding at 1, 8 and 33 rows', async (format, bound) => {
    const w = swigluWeights(format);
    const ffn = NativeFfn.create('test_mlp', w, DEFAULT_EXECUTION);
    expect(ffn).not.toBeNull();
    const graph = await Graph.create('test_mlp', buildMlpGraph(w, 'test_mlp'), { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' });
    try {
      for (const rows of [1, 8, 33]) {
        const x = seeded(rows * w.hidden, 11 + rows, 2);
        const native = ffn!.run(x, rows);
        const onnx = floatData((await graph.run({ x: f32(x, [rows, w.hidden]) })).y, 'test_mlp', 'y');
        expect(native).toHaveLength(onnx.length);
        let largest = 0;
        for (let i = 0; i < onnx.length; i++) largest = Math.max(largest, Math.abs(onnx[i]!));
        expect(largest).toBeGreaterThan(0.1);
        for (let i = 0; i < onnx.length; i++) expect(Math.abs(native[i]! - onnx[i]!)).toBeLessThan(bound * (1 + largest));
      }
    } finally {
      ffn!.release();
      await graph.release();
    }
  });

  it('stays in the graph under --expert-kernel onnxruntime and for weights left in the checkpoint\'s format', () => {
    expect(NativeFfn.create('a', swigluWeights('float32'), { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' })).toBeNull();
    const w = swigluWeights('float32');
    const inFile: WeightData = { kind: 'file', dtype: 'BF16', dims: [w.intermediate, w.hidden] } as unknown as WeightData;
    expect(NativeFfn.create('b', { ...w, gate: inFile }, DEFAULT_EXECUTION)).toBeNull();
  });
});

/**
 * The model with its dense MLP and shared experts on the native kernel against the same model with every product on
 * onnxruntime: same greedy tokens, logits within the float64 reference's bound; and the choice follows --expert-kernel.
 */
describe('the model\'s dense MLP, shared experts and gates on the native kernel (--expert-kernel native, int8/int4)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('native-ffn');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 31 });
  });
  afterAll(async () => dir?.remove());

  const load = async (weightDtype: WeightDtype, expertKernel: ExpertKernel, sharedExperts: 'in-layer' | 'beside-routed' = 'in-layer'): Promise<DeepseekV3Model> => {
    const config = await loadModelConfig(dir.path);
    const experts = await loadLocalExperts(dir.path, config, { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' }, weightDtype);
    return DeepseekV3Model.load(dir.path, { experts, weightDtype, sharedExperts, execution: { ...DEFAULT_EXECUTION, expertKernel } });
  };

  /** A prefill of two prompts, then a batched decode step: each segment's logits. */
  const run = async (model: DeepseekV3Model): Promise<{ logits: Float32Array[]; argmax: number[] }> => {
    const cache = LatentKvCache.forModel(model.config, 64);
    const a: ForwardSegment = { tokenIds: [5, 17, 300, 42, 9], startPosition: 0, length: 5, blocks: [0], wantLogits: true };
    const b: ForwardSegment = { tokenIds: [77, 8], startPosition: 0, length: 2, blocks: [2], wantLogits: true };
    const prefill = await model.forward([a, b], cache);
    const logits = prefill.logits.map((l) => l.slice());
    const argmax = Array.from(prefill.argmax);
    const decode = await model.forward([{ ...a, tokenIds: [1], startPosition: 5, length: 1 }, { ...b, tokenIds: [2], startPosition: 2, length: 1 }], cache);
    return { logits: [...logits, ...decode.logits.map((l) => l.slice())], argmax: [...argmax, ...decode.argmax] };
  };

  it.each(['int8', 'int4'] as const)('%s: native FFNs and gates give the all-onnxruntime model\'s greedy tokens and logits within 1e-4', async (weightDtype) => {
    const native = await load(weightDtype, 'native');
    const onnx = await load(weightDtype, 'onnxruntime');
    try {
      expect(native.denseFfnKernel).toBe('native');
      expect(onnx.denseFfnKernel).toBe('onnxruntime');
      const n = await run(native);
      const o = await run(onnx);
      expect(n.logits).toHaveLength(4);
      expect(n.argmax).toEqual(o.argmax);
      n.logits.forEach((l, r) => {
        let largest = 0;
        for (const v of o.logits[r]!) largest = Math.max(largest, Math.abs(v));
        for (let i = 0; i < l.length; i++) expect(Math.abs(l[i]! - o.logits[r]![i]!)).toBeLessThan(1e-4 * (1 + largest));
      });
    } finally {
      await native.close();
      await onnx.close();
    }
  });

  it('gives the same bits with the shared expert placed in the layer or beside the routed experts', async () => {
    const inLayer = await load('int8', 'native', 'in-layer');
    const beside = await load('int8', 'native', 'beside-routed');
    try {
      const a = await run(inLayer);
      const b = await run(beside);
      a.logits.forEach((l, i) => expect(l).toEqual(b.logits[i]));
    } finally {
      await inLayer.close();
      await beside.close();
    }
  });

  it.each([
    ['int8', 'native', 'native'],
    ['int4', 'native', 'native'],
    ['int8', 'auto', 'onnxruntime'],
    ['float32', 'native', 'onnxruntime'],
    ['auto', 'auto', 'onnxruntime'],
  ] as const)('weights %s, --expert-kernel %s: the dense FFNs and gates run on %s, their bytes counted as read in place', async (weightDtype, expertKernel, expected) => {
    const model = await load(weightDtype, expertKernel);
    // The same weights with the layers' own FFNs in the graphs and the LM head as `model`'s.
    const graphs = await load(weightDtype, model.lmHeadKernel === 'native' ? 'auto' : 'onnxruntime');
    try {
      expect(model.denseFfnKernel).toBe(expected);
      expect(graphs.denseFfnKernel).toBe('onnxruntime');
      const c = model.config;
      const ffnParams = c.moeLayers.length * 3 * c.hiddenSize * c.moeIntermediateSize * c.nSharedExperts + c.firstKDenseReplace * 3 * c.hiddenSize * c.intermediateSize;
      const gateBytes = 4 * c.moeLayers.length * c.nRoutedExperts * c.hiddenSize;
      const extra = model.nativeWeightBytes - graphs.nativeWeightBytes;
      if (expected === 'onnxruntime') expect(extra).toBe(0);
      // int8: a byte a parameter, int4 half, plus their scales; the gates in float32.
      else expect(extra).toBeGreaterThanOrEqual(gateBytes + (weightDtype === 'int8' ? ffnParams : ffnParams / 2));
    } finally {
      await model.close();
      await graphs.close();
    }
  });
});
