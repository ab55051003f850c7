import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { DeepseekV3Model } from '../src/index.js';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { nativeKernelIsas } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, memoryWeight, quantizeBlockwise, type WeightData } from '@expertmesh/tensor-ops';
import { createLmHead } from '../src/lm-head.js';

const config = parseModelConfig(getPreset('tiny').config);
const H = config.hiddenSize;
const V = config.vocabSize;

function seeded(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 48271) % 2147483647) / 2147483647 - 0.5) * scale);
}

const firstMax = (values: Float32Array): number => values.indexOf(Math.max(...values));

/** Both LM heads over the same weight and input: logits and argmax. */
async function both(weight: WeightData, norm: Float32Array, x: Float32Array, rows: number) {
  const native = await createLmHead(config, norm, weight, DEFAULT_EXECUTION);
  const onnx = await createLmHead(config, norm, weight, { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' });
  try {
    return { native: { kernel: native.kernel, ...(await native.run(x, rows)) }, onnx: { kernel: onnx.kernel, ...(await onnx.run(x, rows)) } };
  } finally {
    await native.release();
    await onnx.release();
  }
}

describe('LM head on the native kernel', () => {
  // The addon is built for the test suite (npm test builds it strictly).
  it('is chosen by default (auto) for a float32 head and gives onnxruntime\'s logits within float32 rounding, the same argmax, ties to the lowest index', async () => {
    expect(nativeKernelIsas()).toContain('scalar');
    const lmHead = seeded(V * H, 7, 0.1);
    for (const row of [300, 10]) lmHead.fill(0.5, row * H, (row + 1) * H);
    const norm = seeded(H, 3, 0.5).map((v) => 1 + v);
    const x = Float32Array.from({ length: 3 * H }, (_, i) => (i < H ? 1 : Math.sin(i)));
    const { native, onnx } = await both(memoryWeight(lmHead, [V, H]), new Float32Array(H).fill(1), x, 3);
    expect(native.kernel).toBe('native');
    expect(onnx.kernel).toBe('onnxruntime');
    expect(native.argmax[0]).toBe(10);
    for (let r = 0; r < 3; r++) expect(native.argmax[r]).toBe(firstMax(native.logits.subarray(r * V, (r + 1) * V)));
    expect(Array.from(native.argmax)).toEqual(Array.from(onnx.argmax));
    // Float32 sums in another order: within a few float32 roundings of logits of magnitude ~1.
    for (let i = 0; i < native.logits.length; i++) expect(Math.abs(native.logits[i]! - onnx.logits[i]!)).toBeLessThan(1e-5 * (1 + Math.abs(onnx.logits[i]!)));
    // A final norm with weights of its own: the same agreement.
    const scaled = await both(memoryWeight(lmHead, [V, H]), norm, x, 3);
    for (let i = 0; i < scaled.native.logits.length; i++) expect(Math.abs(scaled.native.logits[i]! - scaled.onnx.logits[i]!)).toBeLessThan(1e-5 * (1 + Math.abs(scaled.onnx.logits[i]!)));
  });

  it('reads a BF16 head from its checkpoint file into the kernel (auto): the float32 head\'s logits over the widened values, bit for bit, and onnxruntime\'s stored head\'s within rounding', async () => {
    const dir = await tempDir('lm-head-bf16');
    try {
      const values = seeded(V * H, 13, 0.1);
      // BF16 bits (round to nearest even) after 24 bytes of something else: the head sits at an offset in its file.
      const bits = Uint16Array.from(new Uint32Array(values.buffer), (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
      const path = join(dir.path, 'head.bin');
      await writeFile(path, Buffer.concat([Buffer.alloc(24, 7), Buffer.from(bits.buffer)]));
      const stored: WeightData = { kind: 'file', dtype: 'bfloat16', dims: [V, H], file: { path, offset: 24, length: V * H * 2 }, scales: null };
      const widened = memoryWeight(new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer), [V, H]);
      const x = seeded(3 * H, 17, 2);
      const norm = seeded(H, 19, 0.5).map((v) => 1 + v);
      const { native, onnx } = await both(stored, norm, x, 3);
      expect(native.kernel).toBe('native');
      expect(onnx.kernel).toBe('onnxruntime');
      const float32 = await createLmHead(config, norm, widened, DEFAULT_EXECUTION);
      try {
        expect(float32.kernel).toBe('native');
        const f = await float32.run(x, 3);
        expect(new Uint32Array(native.logits.buffer, native.logits.byteOffset, native.logits.length)).toEqual(new Uint32Array(f.logits.buffer, f.logits.byteOffset, f.logits.length));
      } finally {
        await float32.release();
      }
      expect(Array.from(native.argmax)).toEqual(Array.from(onnx.argmax));
      for (let i = 0; i < native.logits.length; i++) expect(Math.abs(native.logits[i]! - onnx.logits[i]!)).toBeLessThan(1e-5 * (1 + Math.abs(onnx.logits[i]!)));
      // A file shorter than the head says so.
      const short: WeightData = { ...stored, file: { path, offset: 24 + 2, length: V * H * 2 } };
      await expect(createLmHead(config, norm, short, DEFAULT_EXECUTION)).rejects.toThrow(/ends 2 bytes early/);
    } finally {
      await dir.remove();
    }
  });

  it('runs an int8 head natively near MatMulNBits\' logits (both quantise the activations per block), argmax its own logits\' first maximum', async () => {
    const values = seeded(V * H, 11, 0.1);
    const weight: WeightData = { kind: 'quantized', dims: [V, H], q: quantizeBlockwise(values, V, H, 8, 32) };
    const x = seeded(2 * H, 5, 2);
    const { native, onnx } = await both(weight, new Float32Array(H).fill(1), x, 2);
    expect(native.kernel).toBe('native');
    for (let r = 0; r < 2; r++) expect(native.argmax[r]).toBe(firstMax(native.logits.subarray(r * V, (r + 1) * V)));
    for (let i = 0; i < native.logits.length; i++) expect(Math.abs(native.logits[i]! - onnx.logits[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(onnx.logits[i]!)));
  });
});

/** The model's choice: --expert-kernel auto (the default) puts a head held in memory on the native kernel; onnxruntime or a head left in its file keep the graph. */
describe('the model\'s LM head kernel', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('lm-head-kernel');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 5 });
  });
  afterAll(async () => dir?.remove());

  it.each([
    ['float32', 'auto', 'native'],
    ['int8', 'auto', 'native'],
    ['int4', undefined, 'native'],
    ['float32', 'onnxruntime', 'onnxruntime'],
    // The checkpoint's BF16 head as stored: read into the kernel's storage, even though the experts stay in onnxruntime.
    ['auto', 'auto', 'native'],
    ['auto', 'onnxruntime', 'onnxruntime'],
  ] as const)('weights %s, --expert-kernel %s: the LM head runs on %s, and the bytes held in the kernel storage are counted', async (weightDtype, expertKernel, expected) => {
    // As the CLI's flags give them: the experts' kernel decided by their format, the head's as asked.
    const execution = { ...DEFAULT_EXECUTION, expertKernel: weightDtype === 'auto' && expertKernel === 'auto' ? ('onnxruntime' as const) : expertKernel, productKernel: expertKernel };
    const modelConfig = await loadModelConfig(dir.path);
    const model = await DeepseekV3Model.load(dir.path, { experts: await loadLocalExperts(dir.path, modelConfig, { ...DEFAULT_EXECUTION, expertKernel: 'onnxruntime' }, weightDtype), weightDtype, execution });
    try {
      expect(model.lmHeadKernel).toBe(expected);
      expect(model.nativeWeightBytes > 0).toBe(expected === 'native');
    } finally {
      await model.close();
    }
  });
});
