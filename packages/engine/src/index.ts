export { Engine, InvalidRequestError } from './engine.js';
export type { EngineOptions, GenerationResult, PrefixCacheStats } from './engine.js';
export { Scheduler } from './scheduler.js';
export type { SchedulerLimits, ScheduledSegment, StepPlan, KvAdmission } from './scheduler.js';
export { KvBlockManager, BlockTable, extendBlockHashes } from './kv-block-manager.js';
export { Sequence } from './sequence.js';
export type { GenerationRequest, FinishReason, TokenLogprobs, LogitsProcessor } from './sequence.js';
export { Sampler, GREEDY, argmax, topLogprobs, candidateTokens, SeededRandom } from './sampling.js';
export type { SamplingParams } from './sampling.js';
