import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { EtcdRegistry, keys, SYNC_WORK_CHANNEL, type PlacementPlan, type SyncWork } from '@expertmesh/discovery';
import { EtcdServer, etcdReads } from '../helpers/etcd-server.js';
import { until } from '../helpers/rebalance-cluster.js';

const cluster = 'planwatch';
const plan = (version: number): PlacementPlan => ({ version, modelFingerprint: 'f00', shards: { s0: [{ layer: 1, experts: [version % 8] }], s1: [{ layer: 1, experts: [8 + (version % 8)] }] } });

/**
 * Every shard and router watches the plan, and a plan change reaches them all at once: the watch
 * takes the new plan from the event itself, so a change costs no watcher a read of the key, and the
 * plan is still validated as a read validates it (a plan is untrusted input). Real etcd.
 */
describe('an etcd plan watch', () => {
  let etcd: EtcdServer;
  let writer: EtcdRegistry;
  let watching: EtcdRegistry;
  let raw: Etcd3;

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    writer = new EtcdRegistry([etcd.url], cluster);
    watching = new EtcdRegistry([etcd.url], cluster);
    raw = new Etcd3({ hosts: [etcd.url] });
  });
  afterAll(async () => {
    raw?.close();
    await watching?.close();
    await writer?.close();
    await etcd?.stop();
  });

  it('delivers each new plan from its event without reading the key again', async () => {
    await writer.putPlan(plan(1));
    /** etcd reads while 10 plans are stored (the writer's own check of the stored version counts too). */
    const store = async (from: number): Promise<number> => {
      const before = await etcdReads(etcd.url);
      for (let v = from; v < from + 10; v++) await writer.putPlan(plan(v));
      return (await etcdReads(etcd.url)) - before;
    };
    const unwatched = await store(2);
    const seen: (PlacementPlan | null)[] = [];
    const stops = await Promise.all([0, 1, 2].map(() => watching.watchPlan((p) => seen.push(p))));
    await until('the watches see the stored plan', async () => seen.filter((p) => p?.version === 11).length === 3);
    const watched = await store(12);
    await until('the watches see the last plan', async () => seen.filter((p) => p?.version === 21).length === 3);
    // Re-reading the key at each event would add 3 reads per plan (30 here); the watches' confirmations by etcd may add their few.
    expect(watched).toBeLessThanOrEqual(unwatched + 3);
    expect(seen.at(-1)).toEqual(await writer.getPlan());
    // Each watch saw every plan, in order.
    expect(seen.filter((p) => p !== null && p.version >= 12).map((p) => p!.version)).toEqual(Array.from({ length: 10 }, (_, i) => 12 + i).flatMap((v) => [v, v, v]));
    for (const stop of stops) await stop();
  });

  it('rejects a stored value that is not a valid plan as a read does, and goes on with the next', async () => {
    const versions: (number | null)[] = [];
    const stop = await watching.watchPlan((p) => versions.push(p?.version ?? null));
    await until('the watch sees the stored plan', async () => versions.length === 1);
    const key = keys.plan(cluster);
    await raw.put(key).value('{"version": 30, "modelFingerprint": "f00"}');
    await raw.put(key).value('not json');
    await raw.put(key).value('not json');
    await expect(writer.getPlan()).rejects.toThrow(/is not valid \(not JSON/);
    await raw.put(key).value(JSON.stringify(plan(31)));
    await raw.delete().key(key);
    await raw.put(key).value(JSON.stringify(plan(32)));
    await until('the watch sees the last plan', async () => versions.at(-1) === 32);
    // Neither invalid value reached the listener; the deletion did, as null.
    expect(versions.slice(1)).toEqual([31, null, 32]);
    await stop();
  });

  it('with a pace, leaves each new plan unparsed until the pace allows, then delivers the newest (serving shards take it at a step end)', async () => {
    const cluster2 = new EtcdRegistry([etcd.url], 'planpace');
    const watcher = new EtcdRegistry([etcd.url], 'planpace');
    const parses: string[] = [];
    const onWork = (work: unknown): void => void ((work as SyncWork).what === 'plan-parse' && parses.push('parse'));
    subscribe(SYNC_WORK_CHANNEL, onWork);
    try {
      await cluster2.putPlan(plan(1));
      let release: () => void = () => undefined;
      let paces = 0;
      const pace = (): Promise<void> => (paces++, new Promise<void>((r) => (release = r)));
      const paced: number[] = [];
      const unpaced: number[] = [];
      const stops = [await watcher.watchPlan((p) => unpaced.push(p?.version ?? 0)), await watcher.watchPlan((p) => paced.push(p?.version ?? 0), { pace })];
      await until('the paced watch asks for its first delivery', async () => paces === 1 && unpaced.length === 1);
      const parsedBefore = parses.length;
      expect(paced).toEqual([]);
      release();
      await until('the paced watch delivers the stored plan', async () => paced.length === 1);
      expect(paced).toEqual([1]);
      expect(parses.length).toBe(parsedBefore + 1);
      for (const v of [2, 3, 4]) await cluster2.putPlan(plan(v));
      // The same client's unpaced watch has seen every change, and the paced one has asked for a delivery: it has the events and holds them.
      await until('the changes reached the watches', async () => unpaced.at(-1) === 4 && paces === 2);
      const held = parses.length;
      expect(paced).toEqual([1]);
      release();
      // The unpaced watch having seen plan 4 does not mean the paced one has: etcd sends each watch its own
      // response, in no fixed order between watches. Plan 3 has reached it (etcd sent revision 3 to both before
      // revision 4), so it holds 3 at least; if 4 arrives after this release it asks for its next pace, given
      // here as a serving shard's next step end would give it.
      let released = paces;
      await until('the paced watch delivers the newest plan', async () => {
        if (paces > released) {
          released = paces;
          release();
        }
        return paced.at(-1) === 4;
      });
      // Coalesced: fewer deliveries than changes, in order, each parsed once (the unpaced watch parsed its own: counted before `held`).
      expect(paced.length - 1).toBeLessThan(3);
      expect(paced).toEqual([...paced].sort((x, y) => x - y));
      expect(parses.length - held).toBe(paced.length - 1);
      for (const stop of stops) await stop();
    } finally {
      unsubscribe(SYNC_WORK_CHANNEL, onWork);
      await watcher.close();
      await cluster2.close();
    }
  });
});
