import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Engine } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { WeightDtype } from '@expertmesh/model-weights';
import { returnFreedHeap, weightStorageTotals } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION, type ExpertKernel } from '@expertmesh/tensor-ops';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * One copy of each weight: once loaded, a process's weights live in onnxruntime (pre-packed float32,
 * MatMulNBits codes, or the checkpoint's mapped bytes), not also in JavaScript. The weights' JavaScript
 * copies and the ONNX model bytes that carried them are released by the load itself, not whenever V8
 * next collects (before that, each weight was held two or three times). A vocabulary of 32,768 makes
 * the embedding table and LM head (16 MiB in float32) dominate the tiny model's bytes.
 */
describe('after a load, JavaScript holds no copy of the weights', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('load-buffers');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, dtype: 'bfloat16', seed: 9, overrides: { vocab_size: 32768 } });
  });
  afterAll(async () => dir?.remove());

  // With the native kernel the routed experts' one copy and the LM head's are the kernel's own storage (copied from the loader's
  // arrays, which are then collected): JavaScript holds neither.
  for (const [dtype, expertKernel] of [['float32', 'onnxruntime'], ['int8', 'onnxruntime'], ['float32', 'native'], ['int8', 'native']] as [WeightDtype, ExpertKernel][]) {
    it(`${dtype}, ${expertKernel} experts: JavaScript array buffers grow by under a fifth of the weight bytes; native experts and LM head are held once, in the kernel's storage`, async () => {
      const before = process.memoryUsage().arrayBuffers;
      const storageBefore = weightStorageTotals();
      const experts = await loadLocalExperts(dir.path, await loadModelConfig(dir.path), { ...DEFAULT_EXECUTION, expertKernel }, dtype);
      const engine = await Engine.load(dir.path, { experts, weightDtype: dtype, kvCacheTokens: 64, execution: { ...DEFAULT_EXECUTION, expertKernel } });
      try {
        expect(experts.expertKernel).toBe(expertKernel);
        // The same setting puts the LM head on the native kernel, which copies it into its storage.
        const head = engine.model.nativeWeightBytes;
        expect(head > 0).toBe(expertKernel === 'native');
        const weights = engine.model.denseWeightBytes + experts.weightBytes;
        const grown = process.memoryUsage().arrayBuffers - before;
        // The KV cache (64 tokens) and rotary tables are all JavaScript should still hold: not the LM head (8 MiB, about
        // half the weights in float32), which would be more than the fifth on its own.
        expect(grown).toBeLessThan(0.2 * weights);
        if (dtype === 'float32' && expertKernel === 'native') expect(head).toBeGreaterThan(0.2 * weights);
        // The kernel's storage: the experts' and the LM head's bytes, each program's rounded up to whole 2 MiB pages.
        const storage = weightStorageTotals();
        const held = storage.bytes - storageBefore.bytes;
        if (expertKernel === 'native') {
          expect(held).toBeGreaterThanOrEqual(experts.weightBytes + head);
          expect(held).toBeLessThan(experts.weightBytes + head + (storage.regions - storageBefore.regions) * 2 ** 21);
        } else {
          expect(held).toBe(0);
        }
        expect(weights).toBeGreaterThan(dtype === 'float32' ? 16 * 2 ** 20 : 4 * 2 ** 20);
      } finally {
        await engine.close();
      }
    });
  }

  // The load's freed temporaries (float32 copies, the quantiser's input, onnxruntime's pre-packing copies) are in
  // glibc's heap; the loaders hand their pages back (malloc_trim), so a trim right after a load finds little left.
  for (const [dtype, expertKernel] of [['float32', 'onnxruntime'], ['float32', 'native'], ['int8', 'onnxruntime'], ['int8', 'native'], ['int4', 'native']] as [WeightDtype, ExpertKernel][]) {
    it(`${dtype}, ${expertKernel} experts: the freed heap of the load is already returned to the kernel`, async () => {
      const experts = await loadLocalExperts(dir.path, await loadModelConfig(dir.path), { ...DEFAULT_EXECUTION, expertKernel }, dtype);
      const engine = await Engine.load(dir.path, { experts, weightDtype: dtype, kvCacheTokens: 64 });
      try {
        const weights = engine.model.denseWeightBytes + experts.weightBytes;
        const left = returnFreedHeap();
        expect(left?.glibc).toBe(true);
        expect(left!.releasedBytes).toBeLessThan(0.05 * weights);
      } finally {
        await engine.close();
      }
    });
  }
});
