import type { ModelConfig } from '@expertmesh/model-config';
import { PlacementError } from './dispatch-errors.js';
import { ExpertPlacement } from './expert-placement.js';
import { RemoteRoutedExperts, DEFAULT_DISPATCH, type DispatchOptions } from './remote-routed-experts.js';
import { ShardConnection, type DispatchTransport, type ShardChannel } from './shard-connection.js';
import { framesEndpointOf } from './frame-connection.js';
import { StaticShardSource } from './shard-source.js';

/**
 * Connects to running shards, checks they serve this model (same fingerprint and width) and that
 * together they hold every expert, and returns the dispatcher over them.
 */
export async function connectToShards(
  addresses: readonly string[],
  model: { readonly config: ModelConfig; readonly fingerprint: string },
  options: Partial<DispatchOptions> & { transport?: DispatchTransport; channel?: ShardChannel } = {},
): Promise<RemoteRoutedExperts> {
  const connections = addresses.map((a) => new ShardConnection(a, options.transport ?? 'stream', options.channel ?? {}));
  try {
    const infos = await Promise.all(connections.map((c) => c.info()));
    infos.forEach((info, i) => {
      if (info.modelFingerprint !== model.fingerprint) {
        throw new PlacementError(`shard ${addresses[i]} serves model ${info.modelFingerprint}, not this router's ${model.fingerprint}: point both at the same checkpoint`);
      }
      if (info.hiddenSize !== model.config.hiddenSize) throw new PlacementError(`shard ${addresses[i]} has hidden size ${info.hiddenSize}, the model ${model.config.hiddenSize}`);
    });
    // Expert calls take a shard's frames endpoint when the router asked for frames and the shard has one.
    connections.forEach((c, i) => c.useFrames(framesEndpointOf(addresses[i]!, infos[i]!.framesAddress)));
    const placement = ExpertPlacement.fromShards(
      model.config,
      infos.map((info, i) => ({ address: addresses[i]!, layers: info.layers.map((l) => ({ layer: l.layer, experts: l.experts })) })),
    );
    return new RemoteRoutedExperts(model.config, model.fingerprint, new StaticShardSource({ connections, placement }), { ...DEFAULT_DISPATCH, ...options });
  } catch (e) {
    for (const c of connections) c.close();
    throw e;
  }
}
