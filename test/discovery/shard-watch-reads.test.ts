import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Etcd3 } from 'etcd3';
import { EtcdRegistry, keys, SYNC_WORK_CHANNEL, type ShardRecord, type SyncWork } from '@expertmesh/discovery';
import { EtcdServer, etcdReads } from '../helpers/etcd-server.js';

const record = (id: string, planVersion: number): ShardRecord => ({
  shardId: id,
  address: `127.0.0.1:${6000 + id.length}`,
  modelFingerprint: 'f00',
  layers: [{ layer: 1, experts: [planVersion % 8, 8 + id.length] }],
  computeDtype: 'float32',
  weightBytes: 10,
  health: 'SERVING',
  planVersion,
  slot: '',
});

const until = async (what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/**
 * During a rebalance every shard publishes its record a few times, and every shard waiting on the
 * others and every router watches the records. A watch applies each change from the event itself:
 * a burst of updates costs etcd no read of the whole prefix per change per watcher, and the watcher
 * still ends with exactly the records a fresh read gives. Real etcd.
 */
describe('an etcd shard watch', () => {
  let etcd: EtcdServer;
  let writer: EtcdRegistry;
  let watching: EtcdRegistry;

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    writer = new EtcdRegistry([etcd.url], 'burst');
    watching = new EtcdRegistry([etcd.url], 'burst');
  });
  afterAll(async () => {
    await watching?.close();
    await writer?.close();
    await etcd?.stop();
  });

  it('applies a burst of record changes without reading the records again, and ends where a fresh read does', async () => {
    const a = await writer.registerShard(record('a', 0), 30);
    const b = await writer.registerShard(record('bb', 0), 30);
    /** etcd reads during 20 updates of each record (the writer's own conditional writes count as reads too). */
    const burst = async (from: number): Promise<number> => {
      const before = await etcdReads(etcd.url);
      for (let v = from; v < from + 20; v++) await Promise.all([a.update(record('a', v)), b.update(record('bb', v))]);
      return (await etcdReads(etcd.url)) - before;
    };
    const unwatched = await burst(1);
    const views: ShardRecord[][] = [];
    const stop = await watching.watchShards((shards) => views.push(shards));
    await until('the watch sees both shards', () => views.at(-1)?.length === 2);
    const watched = await burst(21);
    await b.close();
    const c = await writer.registerShard(record('ccc', 7), 30);
    await until('the watch sees the last change', () => {
      const last = views.at(-1) ?? [];
      return last.length === 2 && last.some((r) => r.shardId === 'ccc') && last.find((r) => r.shardId === 'a')?.planVersion === 40;
    });
    // Re-reading on every event would add one read per change (40 here); the watch's confirmation by etcd may still add its one.
    expect(watched).toBeLessThanOrEqual(unwatched + 1);
    const fresh = await writer.listShards();
    expect(views.at(-1)).toEqual(fresh);
    // Never a stale view after a newer one: plan versions of "a" only grow.
    const versions = views.map((v) => v.find((r) => r.shardId === 'a')?.planVersion ?? -1);
    expect(versions).toEqual([...versions].sort((x, y) => x - y));
    await stop();
    await a.close();
    await c.close();
  });

  it('with a pace, parses and delivers nothing until the pace allows, then each changed record once (serving shards take changes at a step end)', async () => {
    const writer2 = new EtcdRegistry([etcd.url], 'paced');
    const watcher = new EtcdRegistry([etcd.url], 'paced');
    // The barrier: a plain etcd watch of the same keys, which parses nothing, counting the changes etcd sends.
    const raw = new Etcd3({ hosts: [etcd.url] });
    let parses = 0;
    const onWork = (work: unknown): void => void ((work as SyncWork).what === 'record-parse' && parses++);
    subscribe(SYNC_WORK_CHANNEL, onWork);
    try {
      const a = await writer2.registerShard(record('a', 0), 30);
      const b = await writer2.registerShard(record('bb', 0), 30);
      let release: () => void = () => undefined;
      let paces = 0;
      const pace = (): Promise<void> => (paces++, new Promise<void>((r) => (release = r)));
      const paced: ShardRecord[][] = [];
      const stop = await watcher.watchShards((s) => paced.push(s), { pace });
      await until('the watch holds its first read', () => paces === 1);
      expect(paced).toEqual([]);
      let before = parses;
      release();
      await until('the paced watch delivers its first read', () => paced.length === 1);
      expect(paced[0]!.map((r) => r.shardId)).toEqual(['a', 'bb']);
      expect(parses - before).toBe(2);
      let changes = 0;
      const barrier = await raw.watch().prefix(keys.shards('paced')).create();
      barrier.on('put', () => changes++);
      // Three updates of one record, two of the other, while the paced watch waits for its pace.
      before = parses;
      for (const v of [1, 2, 3]) await Promise.all([a.update(record('a', v)), v < 3 ? b.update(record('bb', v)) : Promise.resolve()]);
      await until('the changes reached the watches', () => changes === 5 && paces === 2);
      // The paced watch has the first change at least (it asked for its pace), and has parsed and delivered nothing since.
      expect(parses - before).toBe(0);
      expect(paced.length).toBe(1);
      release();
      // The paced watch's own stream may still be receiving the last changes when it delivers (the barrier is another
      // watch): it then asks for its next pace, which is given here, as a serving shard's next step end would.
      let released = paces;
      await until('the paced watch delivers the newest records', () => {
        if (paces > released) {
          released = paces;
          release();
        }
        return paced.at(-1)?.find((r) => r.shardId === 'a')?.planVersion === 3;
      });
      const parsed = parses - before;
      // Fewer deliveries than the 5 changes, and each record parsed at most once per delivery, not once per change.
      expect(paced.length - 1).toBeLessThan(5);
      expect(parsed).toBeLessThanOrEqual(2 * (paced.length - 1));
      expect(paced.at(-1)).toEqual(await writer2.listShards());
      await barrier.cancel();
      await stop();
      await a.close();
      await b.close();
    } finally {
      unsubscribe(SYNC_WORK_CHANNEL, onWork);
      raw.close();
      await watcher.close();
      await writer2.close();
    }
  });
});
