export { makeCheckpoint, CheckpointExistsError, copyTokenizerFiles } from './make-checkpoint.js';
export type { MakeCheckpointOptions, CheckpointSummary } from './make-checkpoint.js';
export { planTensors } from './tensor-plan.js';
export type { PlannedTensor, TensorRole } from './tensor-plan.js';
export { randomValues } from './random-values.js';
export { CHAT_TEMPLATE_NAMES, DEEPSEEK_CHAT_TEMPLATES } from './deepseek-chat-template.js';
export type { ChatTemplateName } from './deepseek-chat-template.js';
