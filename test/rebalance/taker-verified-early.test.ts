import { describe, expect, it } from 'vitest';
import type { ShardRecord } from '@expertmesh/discovery';
import { RegistryShardSource } from '@expertmesh/router';
import type { GetShardInfoResponse } from '@expertmesh/wire';
import { startFakeShard } from '../helpers/fake-shard.js';
import { until } from '../helpers/rebalance-cluster.js';
import { tinyModelRegistry } from '../helpers/registry-fixture.js';

/**
 * A shard joining a cluster registers NOT_SERVING (its slot claimed, nothing loaded), loads its
 * experts, and only then advertises them; the shards handing experts over to it give them up as soon
 * as the registry shows it holding them. A router that asked the new shard who it is (GetShardInfo)
 * only once it advertised would route, for that round trip, to nobody for those experts: a failed
 * step, retried (seen in bench:rebalance when a fifth shard joined). The router verifies a shard as
 * soon as it registers, so the record that advertises the experts is routed to at once. Real etcd,
 * a real gRPC server speaking the shard protocol.
 */
describe('a shard is verified when it registers, before it serves', () => {
  const model = tinyModelRegistry('verified-early', 4);

  it('a record that turns SERVING is routed to in the same view change, with no GetShardInfo left to wait for', async () => {
    const { config, fingerprint, registry } = model;
    const layers = config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: config.nRoutedExperts }, (_, e) => e) }));
    const info: GetShardInfoResponse = { shardId: 'joiner', modelFingerprint: fingerprint, layers, computeDtype: 'float32', weightBytes: 1, residentBytes: 1, hiddenSize: config.hiddenSize };
    // GetShardInfo answers the first time; any later call hangs until the test ends.
    let hang: () => void = () => undefined;
    const hanging = new Promise<GetShardInfoResponse>((resolve) => (hang = () => resolve(info)));
    let asked = 0;
    const fake = await startFakeShard(() => (asked++ === 0 ? Promise.resolve(info) : hanging), (req) => ({ requestId: req.requestId, computeMicros: 0, queueMicros: 0 }));
    const source = await RegistryShardSource.start(registry, { config, fingerprint });
    const record: ShardRecord = { shardId: 'joiner', address: fake.address, modelFingerprint: fingerprint, layers: [], computeDtype: 'float32', weightBytes: 0, health: 'NOT_SERVING', planVersion: 0, slot: 'shard-9' };
    const registration = await registry.registerShard(record, 30);
    try {
      // Registered, not serving: asked who it is, not routed to.
      await until('the router asks the registered shard who it is', async () => fake.infoCalls() >= 1, 20_000);
      expect(source.current().connections).toEqual([]);
      const viewOnServing = new Promise<readonly string[]>((resolve) => {
        const stop = source.onChange((view) => {
          if (view.placement.holdersOf(config.moeLayers[0]!, 0).length === 0) return;
          stop();
          resolve(view.connections.map((c) => c.address));
        });
      });
      // It loaded its experts: the first view that has them routes to it, though GetShardInfo would now hang.
      await registration.update({ ...record, layers, weightBytes: 1, health: 'SERVING', planVersion: 1 });
      expect(await viewOnServing).toEqual([fake.address]);
      expect(await source.notReadyReason()).toBeNull();
      expect(fake.infoCalls()).toBe(1);
    } finally {
      hang();
      await registration.close();
      await source.close();
      await fake.stop();
    }
  });
});
