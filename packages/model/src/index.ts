export { Engine, InvalidRequestError } from './engine.js';
export type { EngineOptions, GenerationResult } from './engine.js';
export { DeepseekV3Model } from './deepseek-v3-model.js';
export type { ForwardSegment, ModelLoadOptions } from './deepseek-v3-model.js';
export { Scheduler } from './scheduler.js';
export type { SchedulerLimits, ScheduledSegment } from './scheduler.js';
export { Sequence } from './sequence.js';
export type { GenerationRequest, FinishReason, TokenLogprobs } from './sequence.js';
export { Sampler, GREEDY, argmax, topLogprobs, SeededRandom } from './sampling.js';
export type { SamplingParams } from './sampling.js';
export { routeTokens, routingToPairs } from './expert-routing.js';
export type { ExpertRouting, ExpertPairs } from './expert-routing.js';
export { LatentKvCache, BlockTable, KvCacheFullError } from './kv-cache.js';
export { LocalRoutedExperts, ExpertNotHeldError } from './experts/local-routed-experts.js';
export type { RoutedExpertsBackend } from './experts/routed-experts-backend.js';
export { WeightReader, WeightShapeError } from './model-weights.js';
export type { LayerWeights, AttentionWeights, FfnWeights, RouterWeights } from './model-weights.js';

export { modelFingerprint } from './model-fingerprint.js';
