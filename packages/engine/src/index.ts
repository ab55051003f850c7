export { Engine, InvalidRequestError } from './engine.js';
export type { EngineOptions, GenerationResult } from './engine.js';
export { Scheduler } from './scheduler.js';
export type { SchedulerLimits, ScheduledSegment, StepPlan } from './scheduler.js';
export { KvBlockAllocator, BlockTable, KvCacheFullError } from './kv-block-allocator.js';
export { Sequence } from './sequence.js';
export type { GenerationRequest, FinishReason, TokenLogprobs } from './sequence.js';
export { Sampler, GREEDY, argmax, topLogprobs, SeededRandom } from './sampling.js';
export type { SamplingParams } from './sampling.js';
