export { LocalCluster, ShardStartError } from './local-cluster.js';
export type { LocalClusterOptions, LocalShard } from './local-cluster.js';
export { connectToShards } from './experts/connect-shards.js';
export { RemoteRoutedExperts, DEFAULT_DISPATCH } from './experts/remote-routed-experts.js';
export type { DispatchOptions, DispatchCall } from './experts/remote-routed-experts.js';
export { ShardConnection } from './experts/shard-connection.js';
export type { DispatchTransport } from './experts/shard-connection.js';
export { ExpertPlacement } from './experts/expert-placement.js';
export { ShardCallError, ShardTimeoutError, ShardUnavailableError, PlacementError } from './experts/dispatch-errors.js';
