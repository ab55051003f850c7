import { Engine } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { openExperts } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';

export type DecodeEngine = Pick<Engine, 'submit' | 'step' | 'hasWork'> & { close(): Promise<void> };

/** An engine over the model with its routed experts in this process (shards 0) or on `shards` local shard processes. */
export async function openDecodeEngine(modelDir: string, shards: number, kvCacheTokens: number): Promise<DecodeEngine> {
  const identity = await readCheckpointIdentity(modelDir);
  const cluster = shards > 0 ? await LocalCluster.start({ modelDir, shards, nRoutedExperts: identity.config.nRoutedExperts, shardArgs: ['--intra-op-threads', '1'] }) : null;
  const experts = await openExperts(cluster ? { kind: 'shards', addresses: cluster.addresses } : { kind: 'in-process' }, { ...identity, modelDir }, DEFAULT_EXECUTION);
  const engine = await Engine.load(modelDir, { experts, sharedExperts: cluster ? 'beside-routed' : 'in-layer', kvCacheTokens, maxBatchSize: 64, maxBatchedTokens: 4096 });
  return {
    submit: (r) => engine.submit(r),
    step: () => engine.step(),
    get hasWork() {
      return engine.hasWork;
    },
    close: async () => {
      await engine.close();
      await cluster?.stop();
    },
  };
}
