export { makeCheckpoint } from './make-checkpoint.js';
export type { MakeCheckpointOptions, CheckpointSummary } from './make-checkpoint.js';
export { planTensors } from './tensor-plan.js';
export type { PlannedTensor, TensorRole } from './tensor-plan.js';
export { randomValues } from './random-values.js';
