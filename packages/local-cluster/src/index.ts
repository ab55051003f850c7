export { LocalCluster, ShardStartError } from './local-cluster.js';
export type { LocalClusterOptions, LocalShard } from './local-cluster.js';
