export { routeTokens, routingToPairs } from './expert-routing.js';
export type { ExpertRouting, ExpertPairs } from './expert-routing.js';
export type { RoutedExpertsBackend } from './routed-experts-backend.js';
