import { describe, expect, it } from 'vitest';
import { ExpertKernelConfigError, ExpertKernelNotBuiltError, nativeKernelIsas, resolveExpertKernel } from '@expertmesh/expert-kernel';
import { quantizeBlockwise, type WeightData } from '@expertmesh/tensor-ops';
import { chooseExpertKernel, chooseProductKernel } from '../src/expert-kernel-choice.js';

const built = () => true;
const notBuilt = () => false;

describe('--expert-kernel: auto, onnxruntime or native, decided at start-up', () => {
  it('auto runs float32 and int8/int4 experts natively when the addon is built, and onnxruntime otherwise', () => {
    for (const dtype of ['float32', 'int8', 'int4']) {
      expect(chooseExpertKernel('auto', dtype, built), dtype).toBe('native');
      expect(chooseExpertKernel(undefined, dtype, built), `${dtype}, unset`).toBe('native');
      expect(chooseExpertKernel('auto', dtype, notBuilt), `${dtype}, not built`).toBe('onnxruntime');
    }
    // auto: the checkpoint's own format, left in its file for onnxruntime to widen.
    expect(chooseExpertKernel('auto', 'auto', built)).toBe('onnxruntime');
  });

  it('onnxruntime is always onnxruntime; native is native where it runs, and refused where it does not or is not built', () => {
    for (const dtype of ['auto', 'float32', 'int8', 'int4']) expect(chooseExpertKernel('onnxruntime', dtype, notBuilt)).toBe('onnxruntime');
    for (const dtype of ['float32', 'int8', 'int4']) expect(chooseExpertKernel('native', dtype, built)).toBe('native');
    expect(() => chooseExpertKernel('native', 'auto', built)).toThrow(ExpertKernelConfigError);
    expect(() => chooseExpertKernel('native', 'auto', built)).toThrow(/--expert-kernel native runs float32 and int8\/int4 routed experts held in memory, not auto: add --expert-weight-dtype/);
    expect(() => chooseExpertKernel('native', 'int8', notBuilt)).toThrow(ExpertKernelNotBuiltError);
    expect(() => chooseExpertKernel('native', 'int8', notBuilt)).toThrow(/npm run build:native/);
  });

  it("refuses a malformed wake setting of the native kernel's pool at start-up, where native would run", () => {
    const ok = { EXPERTMESH_EXPERT_KERNEL_SPIN_US: '300', EXPERTMESH_EXPERT_KERNEL_YIELD_US: '0' };
    expect(chooseExpertKernel('auto', 'int8', built, ok)).toBe('native');
    expect(chooseExpertKernel('native', 'float32', built, { EXPERTMESH_EXPERT_KERNEL_SPIN_US: '' })).toBe('native');
    for (const bad of ['60us', '-1', '1.5', '1000001']) {
      expect(() => chooseExpertKernel('native', 'int8', built, { EXPERTMESH_EXPERT_KERNEL_SPIN_US: bad }), bad).toThrow(ExpertKernelConfigError);
      expect(() => chooseExpertKernel('auto', 'int8', built, { EXPERTMESH_EXPERT_KERNEL_YIELD_US: bad }), bad).toThrow(/EXPERTMESH_EXPERT_KERNEL_YIELD_US=.* is not whole microseconds/);
    }
    // Not read where the native kernel does not run.
    expect(chooseExpertKernel('onnxruntime', 'int8', built, { EXPERTMESH_EXPERT_KERNEL_SPIN_US: 'x' })).toBe('onnxruntime');
    expect(chooseExpertKernel('auto', 'int8', notBuilt, { EXPERTMESH_EXPERT_KERNEL_SPIN_US: 'x' })).toBe('onnxruntime');
  });

  it('refuses a value that is not a kernel, naming the three', () => {
    expect(() => chooseExpertKernel('cuda-graphs', 'int8', built)).toThrow(ExpertKernelConfigError);
    expect(() => chooseExpertKernel('Native', 'int8', built)).toThrow(/--expert-kernel must be auto, onnxruntime, native, not Native/);
  });

  it('resolveExpertKernel asks the real addon: built here (npm test builds it), so auto runs float32 natively', () => {
    expect(nativeKernelIsas()).toContain('scalar');
    expect(resolveExpertKernel('auto', 'float32')).toBe('native');
    expect(resolveExpertKernel(undefined, 'auto')).toBe('onnxruntime');
  });
});

describe('the model\'s own products (the LM head) under --expert-kernel', () => {
  const memory: WeightData = { kind: 'memory', dims: [4, 32], data: new Float32Array(128) };
  const codes: WeightData = { kind: 'quantized', dims: [4, 32], q: quantizeBlockwise(new Float32Array(128), 4, 32, 8, 32) };
  const file = { kind: 'file', dtype: 'bfloat16', dims: [4, 32], file: { path: '/x', offset: 0, length: 256 }, scales: null } as unknown as WeightData;

  it('auto and native: native for float32 values and codes in memory when built; onnxruntime for a weight in its file or without the addon', () => {
    for (const kernel of ['auto', 'native', undefined]) {
      expect(chooseProductKernel(kernel, memory, built), `${kernel} float32`).toBe('native');
      expect(chooseProductKernel(kernel, codes, built), `${kernel} int8`).toBe('native');
      expect(chooseProductKernel(kernel, file, built), `${kernel} file`).toBe('onnxruntime');
      expect(chooseProductKernel(kernel, memory, notBuilt), `${kernel} not built`).toBe('onnxruntime');
    }
  });

  it('onnxruntime deselects it; a value that is not a kernel is refused', () => {
    expect(chooseProductKernel('onnxruntime', memory, built)).toBe('onnxruntime');
    expect(chooseProductKernel('onnxruntime', codes, built)).toBe('onnxruntime');
    expect(() => chooseProductKernel('fast', memory, built)).toThrow(/--expert-kernel must be auto, onnxruntime, native, not fast/);
  });
});
