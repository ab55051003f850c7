export { ShardServer, SHARD_SERVICE_NAME } from './shard-server.js';
export { ShardCompute } from './shard-compute.js';
export { ShardRequestError } from './shard-request-error.js';
export { loadShardCompute } from './load-shard.js';
export { parseExpertSpec, selectedExperts, evenSplitSpec, ExpertSpecError } from './expert-spec.js';
export type { ExpertSelection } from './expert-spec.js';
export { runShard, shardUsage, ShardUsageError } from './run-shard.js';
