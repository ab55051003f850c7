export { NativeExpertProgram, ExpertKernelError, ExpertKernelNotBuiltError, nativeKernelIsas, type NativeIsa, type NativeProgramOptions } from './native-expert-program.js';
export { IdleHeapReturn, mallocHeapStats, returnFreedHeap, setMallocOption, type HeapTrim, type MallocHeapStats, type MallocOptionName } from './malloc-heap.js';
