export { NativeExpertProgram, addWeightedRows, ExpertKernelError, ExpertKernelNotBuiltError, nativeKernelIsas, nativeKernelRuns, type NativeIsa, type NativeProgramOptions } from './native-expert-program.js';
export { ExpertKernelConfigError, resolveExpertKernel, type ResolvedExpertKernel } from './expert-kernel-choice.js';
export { heapReturnEnabled, IdleHeapReturn, mallocHeapStats, returnFreedHeap, type HeapTrim, type MallocHeapStats } from './malloc-heap.js';
