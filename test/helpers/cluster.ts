import { Engine, type EngineOptions } from '@expertmesh/engine';
import { loadModelConfig } from '@expertmesh/model-config';
import { connectToShards, type DispatchOptions, type DispatchTransport, type RemoteRoutedExperts } from '@expertmesh/router';
import { LocalCluster } from '@expertmesh/local-cluster';

/** A router engine in this process over `shards` real shard processes on loopback. */
export async function startDistributed(
  modelDir: string,
  shards: number,
  dispatch: Partial<DispatchOptions> & { transport?: DispatchTransport } = {},
  engineOptions: EngineOptions = {},
): Promise<{ engine: Engine; cluster: LocalCluster; experts: RemoteRoutedExperts; stop: () => Promise<void> }> {
  const config = await loadModelConfig(modelDir);
  const cluster = await LocalCluster.start({ modelDir, shards, nRoutedExperts: config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1'] });
  let experts: RemoteRoutedExperts | null = null;
  try {
    const engine = await Engine.load(modelDir, {
      kvCacheTokens: 2048,
      ...engineOptions,
      experts: async (model) => (experts = await connectToShards(cluster.addresses, model, dispatch)),
    });
    return {
      engine,
      cluster,
      experts: experts!,
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
