// The load turn is decided from the shard records alone; routers use the same rule (plan-progress).
export { loadingBefore } from '@expertmesh/discovery';
