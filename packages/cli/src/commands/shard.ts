import { runShard, ShardUsageError, shardUsage } from '@expertmesh/expert-shard';
import { UsageError } from '../cli-error.js';

export { shardUsage };

export async function shard(argv: readonly string[]): Promise<number> {
  try {
    return await runShard(argv);
  } catch (e) {
    if (e instanceof ShardUsageError) throw new UsageError(e.message);
    throw e;
  }
}
