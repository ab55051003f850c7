export { NativeExpertProgram, addWeightedRows, ExpertKernelError, ExpertKernelNotBuiltError, nativeKernelIsas, type NativeIsa, type NativeProgramOptions } from './native-expert-program.js';
export { heapReturnEnabled, IdleHeapReturn, mallocHeapStats, returnFreedHeap, type HeapTrim, type MallocHeapStats } from './malloc-heap.js';
