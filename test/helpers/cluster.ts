import type { Engine, EngineOptions } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { connectToShards, type DispatchOptions, type DispatchTransport, type RemoteRoutedExperts } from '@expertmesh/router';
import { loadEngineWith } from './engine.js';

/** A router engine in this process over `shards` real shard processes on loopback. */
export async function startDistributed(
  modelDir: string,
  shards: number,
  dispatch: Partial<DispatchOptions> & { transport?: DispatchTransport } = {},
  engineOptions: Omit<EngineOptions, 'experts'> = {},
): Promise<{ engine: Engine; cluster: LocalCluster; experts: RemoteRoutedExperts; stop: () => Promise<void> }> {
  const identity = await readCheckpointIdentity(modelDir);
  const cluster = await LocalCluster.start({ modelDir, shards, nRoutedExperts: identity.config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1'] });
  try {
    const experts = await connectToShards(cluster.addresses, identity, dispatch);
    const engine = await loadEngineWith(modelDir, experts, { kvCacheTokens: 2048, ...engineOptions });
    return {
      engine,
      cluster,
      experts,
      stop: async () => {
        await engine.close();
        await cluster.stop();
      },
    };
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}
