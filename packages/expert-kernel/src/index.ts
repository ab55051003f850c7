export { NativeExpertProgram, addWeightedRows, ExpertKernelError, ExpertKernelNotBuiltError, nativeKernelIsas, type NativeIsa, type NativeProgramOptions } from './native-expert-program.js';
