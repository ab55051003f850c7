export { LocalRoutedExperts, ExpertNotHeldError, restAfterBuild, yieldTurn } from './local-routed-experts.js';
export type { AfterGraphBuilt } from './local-routed-experts.js';
export type { ExpertWeightSource } from './local-routed-experts.js';
export { loadLocalExperts } from './load-local-experts.js';
export { checkExpertKernel } from './expert-program.js';
export { ExpertKernelConfigError } from '@expertmesh/expert-kernel';
export type { ExpertProgram } from './expert-program.js';
