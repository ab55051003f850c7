export { DeepseekV3Model } from './deepseek-v3-model.js';
export type { ForwardResult, ForwardSegment, ModelLoadOptions, SharedExpertsPlacement } from './deepseek-v3-model.js';
export { LatentKvCache } from './kv-cache.js';
export { createLmHead, type LmHead } from './lm-head.js';
export { NativeFfn } from './native-ffn.js';
export { NativeRouter } from './native-router.js';
export type { HeldFormats, HeldPart } from './held-formats.js';
