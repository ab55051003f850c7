export { routingToPairs } from './expert-routing.js';
export type { ExpertRouting, ExpertPairs } from './expert-routing.js';
export type { RoutedExpertsBackend, ExpertHolderState, PlanStatus } from './routed-experts-backend.js';
export { DispatchObservers } from './dispatch-observers.js';
export { ForwardingExperts } from './forwarding-experts.js';
export type { DispatchCall, DispatchHedge, DispatchObserver, HolderHealthChange, SuspicionReason } from './dispatch-observers.js';
