export { LocalRoutedExperts, ExpertNotHeldError } from './local-routed-experts.js';
export type { ExpertWeightSource } from './local-routed-experts.js';
export { loadLocalExperts } from './load-local-experts.js';
