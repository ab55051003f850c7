import type { ShardRecord } from '@expertmesh/discovery';
import { channelCredentials, type TlsMaterial } from '@expertmesh/security';
import { CHANNEL_OPTIONS, expertmeshV1 } from '@expertmesh/wire';

/**
 * Whether the process holding a shard id is gone: its lease may outlive it (kill -9) by up to a TTL,
 * and a replacement should not wait that long. The holder is alive when its address answers
 * GetShardInfo as that shard (over mutual TLS when configured); this process's own address cannot be
 * the old holder's any more.
 */
export function staleHolderProbe(ownAddress: string, tls: TlsMaterial | null, timeoutMs = 2000): (holder: ShardRecord) => Promise<boolean> {
  const answersAs = async (address: string, credentials: ReturnType<typeof channelCredentials>): Promise<string | null> => {
    const client = new (expertmeshV1().ExpertShardService)(address, credentials, CHANNEL_OPTIONS);
    try {
      return await new Promise<string | null>((resolve) => client.GetShardInfo({}, { deadline: Date.now() + timeoutMs }, (err, info) => resolve(err || !info ? null : info.shardId)));
    } finally {
      client.close();
    }
  };
  return async (holder) => {
    if (holder.address === ownAddress) return true;
    // Alive if it answers as that shard either way: only liveness is asked, and erring towards "alive" never takes a live id.
    if ((await answersAs(holder.address, channelCredentials(tls))) === holder.shardId) return false;
    return !(tls && (await answersAs(holder.address, channelCredentials(null))) === holder.shardId);
  };
}
