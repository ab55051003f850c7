export { OnnxModelBuilder } from './onnx-model-builder.js';
export type { OnnxElementType, Dim, AttributeValue, ConstantTensor } from './onnx-model-builder.js';
export { Graph, GraphRuntimeError, DEFAULT_EXECUTION, f32, i32, i64, floatData, int32Data } from './execution.js';
export type { ExecutionOptions, ExecutionProvider, Tensor } from './execution.js';
export { weight, linear, rmsNorm, silu, swiglu } from './graph-ops.js';
export type { SwigluWeights } from './graph-ops.js';
