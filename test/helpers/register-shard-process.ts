// Registers one shard record in etcd and keeps it alive until killed: a stand-in for a shard process.
import { EtcdRegistry } from '@expertmesh/discovery';

const [url, cluster, shardId, ttl] = process.argv.slice(2);
const registry = new EtcdRegistry([url!], cluster!);
await registry.registerShard(
  { shardId: shardId!, address: '127.0.0.1:1', modelFingerprint: 'f00', layers: [], computeDtype: 'float32', weightBytes: 0, health: 'SERVING', planVersion: 0, slot: '' },
  Number(ttl),
);
process.stdout.write('registered\n');
setInterval(() => undefined, 1000);
