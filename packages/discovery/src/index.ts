export type { ClusterRegistry, ShardRegistration } from './cluster-registry.js';
export { EtcdRegistry } from './etcd-registry.js';
export { MemoryRegistry } from './memory-registry.js';
export { shardRecordSchema, placementPlanSchema, keys } from './records.js';
export type { ShardRecord, PlacementPlan } from './records.js';
export { planPlacement, planShardBytes, PlacementPlanError } from './placement-planner.js';
export type { PlanRequest } from './placement-planner.js';
export { EtcdProcess, etcdInstalled } from './etcd-process.js';
