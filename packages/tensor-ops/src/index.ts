export { OnnxModelBuilder, DEFAULT_INLINE_WEIGHT_BYTES } from './onnx-model-builder.js';
export type { OnnxElementType, Dim, AttributeValue, ConstantTensor, FileRange, BuiltModel, FedWeight } from './onnx-model-builder.js';
export { weightBytes, weightFormat, memoryWeight, STORED_DTYPE_BYTES } from './weight-data.js';
export type { WeightData, StoredDtype, BlockScales } from './weight-data.js';
export { Graph, GraphRuntimeError, DEFAULT_EXECUTION, f32, i32, i64, floatData, int32Data } from './execution.js';
export type { ExecutionOptions, ExecutionProvider, Tensor } from './execution.js';
export { weight, linear, widened, embeddingRows, rmsNorm, silu, swiglu, WIDEN_CHUNK_BYTES } from './graph-ops.js';
export type { SwigluWeights } from './graph-ops.js';
