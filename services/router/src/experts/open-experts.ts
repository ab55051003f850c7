import type { ClusterRegistry } from '@expertmesh/discovery';
import { loadLocalExperts } from '@expertmesh/local-experts';
import type { CheckpointIdentity, WeightDtype } from '@expertmesh/model-weights';
import type { RoutedExpertsBackend } from '@expertmesh/routed-experts';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { connectToShards } from './connect-shards.js';
import { PlacementError } from './dispatch-errors.js';
import { RegistryShardSource, type RegistrySourceOptions } from './registry-shard-source.js';
import { DEFAULT_DISPATCH, RemoteRoutedExperts, type DispatchOptions } from './remote-routed-experts.js';
import type { DispatchTransport, ShardChannel } from './shard-connection.js';

/** Where a router's routed experts run: exactly one of these. */
export type ExpertsPlacement =
  | { readonly kind: 'in-process' }
  /** Shards at fixed addresses; together they must hold every expert. */
  | { readonly kind: 'shards'; readonly addresses: readonly string[] }
  /** Shards found in a cluster registry (etcd), followed as they come and go. */
  | { readonly kind: 'registry'; readonly registry: ClusterRegistry };

const KEYS: Record<ExpertsPlacement['kind'], readonly string[]> = { 'in-process': ['kind'], shards: ['kind', 'addresses'], registry: ['kind', 'registry'] };

/**
 * Checks a placement given by a caller that the types could not hold (JavaScript, parsed config):
 * one kind, with exactly its own fields, so that a registry can never silently override addresses.
 */
export function checkExpertsPlacement(placement: unknown): ExpertsPlacement {
  const p = placement as Partial<Record<string, unknown>> | null;
  const kind = p?.kind;
  if (typeof kind !== 'string' || !(kind in KEYS)) throw new PlacementError(`experts placement must be one of ${Object.keys(KEYS).join(', ')} (got ${String(kind)})`);
  const extra = Object.keys(p!).filter((k) => !KEYS[kind as ExpertsPlacement['kind']].includes(k));
  if (extra.length) throw new PlacementError(`experts placement "${kind}" takes no ${extra.join(', ')}: give shard addresses or a registry, not both`);
  if (kind === 'shards' && (!Array.isArray(p!.addresses) || p!.addresses.length === 0 || !p!.addresses.every((a) => typeof a === 'string' && a.length > 0))) {
    throw new PlacementError('experts placement "shards" needs at least one HOST:PORT address');
  }
  if (kind === 'registry' && (typeof p!.registry !== 'object' || p!.registry === null)) throw new PlacementError('experts placement "registry" needs a cluster registry');
  return placement as ExpertsPlacement;
}

/** Builds the experts backend a placement names, before the model that will use it. */
export async function openExperts(
  placement: ExpertsPlacement,
  model: CheckpointIdentity & { readonly modelDir: string },
  execution: ExecutionOptions,
  dispatch: Partial<DispatchOptions> & { readonly transport?: DispatchTransport; readonly channel?: ShardChannel } & Pick<RegistrySourceOptions, 'secured' | 'insecure' | 'onRejected'> = {},
  /** The format in-process experts are held in (shards choose their own). */
  weightDtype: WeightDtype = 'auto',
): Promise<RoutedExpertsBackend> {
  const checked = checkExpertsPlacement(placement);
  switch (checked.kind) {
    case 'in-process':
      return loadLocalExperts(model.modelDir, model.config, execution, weightDtype);
    case 'shards':
      return connectToShards(checked.addresses, model, dispatch);
    case 'registry': {
      const { transport, channel, secured, insecure, onRejected, ...options } = dispatch;
      const source = await RegistryShardSource.start(checked.registry, model, {
        ...(transport ? { transport } : {}),
        ...(channel ? { channel } : {}),
        ...(secured !== undefined ? { secured } : {}),
        ...(insecure !== undefined ? { insecure } : {}),
        ...(onRejected ? { onRejected } : {}),
      });
      return new RemoteRoutedExperts(model.config, model.fingerprint, source, { ...DEFAULT_DISPATCH, ...options });
    }
  }
}
