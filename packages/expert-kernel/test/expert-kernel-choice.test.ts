import { describe, expect, it } from 'vitest';
import { ExpertKernelConfigError, ExpertKernelNotBuiltError, nativeKernelIsas, resolveExpertKernel } from '@expertmesh/expert-kernel';
import { chooseExpertKernel } from '../src/expert-kernel-choice.js';

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
