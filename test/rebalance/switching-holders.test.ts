import { describe, expect, it } from 'vitest';
import type { PlacementPlan, ShardRecord } from '@expertmesh/discovery';
import { RegistryShardSource, type ShardView } from '@expertmesh/router';
import { startFakeShard } from '../helpers/fake-shard.js';
import { until } from '../helpers/rebalance-cluster.js';
import { tinyModelRegistry } from '../helpers/registry-fixture.js';

/**
 * During a rebalance a shard loads the experts a new plan gives it while it serves its old ones, on
 * the thread that answers calls. The router tells such a shard from the records (an older plan
 * version, not yet advertising all the new plan gives its slot, and its host's turn to load) and, when
 * an expert has two holders, sends its rows to the one that is not loading. Real etcd, real gRPC servers speaking the shard protocol.
 */
describe('the router knows which shards are loading a new plan', () => {
  const model = tinyModelRegistry('switching', 4);

  it('a shard on an older plan that does not yet advertise its new experts is loading in its host\'s turn; once it advertises them, or is on the plan, it is not', async () => {
    const { config, fingerprint, registry } = model;
    const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
    const layersOf = (experts: number[]): ShardRecord['layers'] => config.moeLayers.map((layer) => ({ layer, experts }));
    const plan = (version: number, a: number[], b: number[]): PlacementPlan => ({ version, modelFingerprint: fingerprint, shards: { 'shard-0': layersOf(a), 'shard-1': layersOf(b) } });
    const fakes = await Promise.all(
      ['a', 'b'].map((id) =>
        startFakeShard({ shardId: id, modelFingerprint: fingerprint, layers: [], computeDtype: 'float32', weightBytes: 1, residentBytes: 1, hiddenSize: config.hiddenSize }, (req) => ({ requestId: req.requestId, computeMicros: 0, queueMicros: 0 })),
      ),
    );
    const record = (id: string, slot: string, address: string, experts: number[], planVersion: number): ShardRecord => ({ shardId: id, address, modelFingerprint: fingerprint, layers: layersOf(experts), computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion, slot });
    await registry.putPlan(plan(1, range(0, 8), range(8, 16)));
    const source = await RegistryShardSource.start(registry, { config, fingerprint });
    const a = await registry.registerShard(record('a', 'shard-0', fakes[0]!.address, range(0, 8), 1), 30);
    const b = await registry.registerShard(record('b', 'shard-1', fakes[1]!.address, range(8, 16), 1), 30);
    const switching = (view: ShardView): string[] => [...(view.switching ?? [])].map((i) => view.connections[i]!.address).sort();
    const routesToBoth = async (): Promise<boolean> => source.current().connections.length === 2;
    try {
      await until('the router routes to both shards', routesToBoth, 20_000);
      expect(switching(source.current())).toEqual([]);
      // Plan 2 moves experts 4-7 from shard-0 to shard-1: shard-1 loads them (not yet advertised).
      await registry.putPlan(plan(2, range(0, 4), range(4, 16)), { replaces: 1 });
      await until('shard-1 seen loading plan 2', async () => switching(source.current()).length > 0, 20_000);
      expect(switching(source.current())).toEqual([fakes[1]!.address].sort());
      // shard-1 loaded them and serves old and new: experts 4-7 have two holders, shard-1 no longer loads;
      // shard-0 still advertises what plan 2 gives it (a subset of what it serves): not loading either.
      await b.update(record('b', 'shard-1', fakes[1]!.address, range(4, 16), 1));
      await until('shard-1 advertising plan 2', async () => source.current().placement.holdersOf(config.moeLayers[0]!, 4).length === 2, 20_000);
      expect(switching(source.current())).toEqual([]);
      // A plan that gives shard-0 experts it must load: shard-0 switching until it advertises them or reports the plan.
      await registry.putPlan(plan(3, range(0, 10), range(4, 16)), { replaces: 2 });
      await until('shard-0 seen loading plan 3', async () => switching(source.current()).length > 0, 20_000);
      expect(switching(source.current())).toEqual([fakes[0]!.address]);
      await a.update(record('a', 'shard-0', fakes[0]!.address, range(0, 10), 3));
      await until('shard-0 on plan 3', async () => switching(source.current()).length === 0, 20_000);
      // Both shards gain experts in plan 4; on one host they load one at a time, in slot order: only the one
      // whose turn it is counts as loading (the other serves as usual while it waits).
      await registry.putPlan(plan(4, range(0, 12), range(2, 16)), { replaces: 3 });
      await until('a shard seen loading plan 4', async () => switching(source.current()).length > 0, 20_000);
      expect(switching(source.current())).toEqual([fakes[0]!.address]);
      await a.update(record('a', 'shard-0', fakes[0]!.address, range(0, 12), 3));
      await until('shard-1 loading plan 4 in its turn', async () => switching(source.current()).includes(fakes[1]!.address), 20_000);
      expect(switching(source.current())).toEqual([fakes[1]!.address]);
    } finally {
      await a.close();
      await b.close();
      await source.close();
      await Promise.all(fakes.map((f) => f.stop()));
    }
  });
});
