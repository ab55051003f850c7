// Registers one shard record and keeps it alive until killed: a stand-in for a shard process.
//   register-shard-process.ts etcd URL CLUSTER ID TTL | http URL - ID TTL (token in EXPERTMESH_REGISTRY_TOKEN)
import { EtcdRegistry, HttpRegistry } from '@expertmesh/discovery';

const [kind, url, cluster, shardId, ttl] = process.argv.slice(2);
const registry = kind === 'http' ? new HttpRegistry(url!, process.env.EXPERTMESH_REGISTRY_TOKEN ?? '') : new EtcdRegistry([url!], cluster!);
await registry.registerShard(
  { shardId: shardId!, address: '127.0.0.1:1', modelFingerprint: 'f00', layers: [], computeDtype: 'float32', weightBytes: 0, health: 'SERVING', planVersion: 0, slot: '' },
  Number(ttl),
);
process.stdout.write('registered\n');
setInterval(() => undefined, 1000);
