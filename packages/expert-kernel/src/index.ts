export { NativeProduct, type ProductResult } from './native-product.js';
export { NativeExpertProgram, addWeightedRows, ExpertKernelError, ExpertKernelNotBuiltError, nativeKernelIsas, nativeKernelRuns, readKernelProfile, setKernelProfiling, type KernelRunProfile, type NativeIsa, type NativeProgramOptions, type StreamProbeResult } from './native-expert-program.js';
export { chooseProductKernel, ExpertKernelConfigError, resolveExpertKernel, resolveProductKernel, type ResolvedExpertKernel } from './expert-kernel-choice.js';
export { heapReturnEnabled, IdleHeapReturn, mallocHeapStats, returnFreedHeap, returnIdleMemory, type HeapTrim, type IdleMemoryReturn, type MallocHeapStats, type V8HeapShrink } from './malloc-heap.js';
