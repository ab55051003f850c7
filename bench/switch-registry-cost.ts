/**
 * What one shard-record write and one read of every record cost, in isolation: etcd's CPU (all its threads,
 * /proc/PID/task/*\/schedstat, ns) and this process's (its watchers decoding the event and parsing the record), on a
 * real etcd with WATCHERS records watches (bench:rebalance has a router, four or five shards and the bench's own);
 * and one record's parse (JSON + the zod schema) the first time in a process, warm, and after full collections
 * (V8 flushes the bytecode of functions unused for a while). Numbers for bench/switch-cpu.py's owners.
 *   node --expose-gc --import tsx bench/switch-registry-cost.ts [--writes 200] [--watchers 6]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { EtcdProcess, EtcdRegistry, shardRecordSchema, type ShardRecord } from '@expertmesh/discovery';

const { values } = parseArgs({ options: { writes: { type: 'string', default: '200' }, watchers: { type: 'string', default: '6' } } });
const WRITES = Number(values.writes);
const WATCHERS = Number(values.watchers);
const gc = (globalThis as { gc?: () => void }).gc;

// The demo model's shape: 3 MoE layers, a shard advertising 16 experts of each.
const layers = (offset: number): ShardRecord['layers'] => [1, 2, 3].map((layer) => ({ layer, experts: Array.from({ length: 16 }, (_, e) => (e * 2 + offset) % 64) }));
const record = (i: number, offset: number): ShardRecord => ({ shardId: `shard-id-${i}-0123456789abcdef`, address: `127.0.0.1:${40000 + i}`, framesAddress: `127.0.0.1:${41000 + i}`, slot: `shard-${i}`, planVersion: 3, modelFingerprint: 'f'.repeat(64), layers: layers(offset), computeDtype: 'float32', weightBytes: 1277952, weightFormat: 'float32', health: 'SERVING' });

const parseMs = (text: string): number => {
  const t0 = performance.now();
  const r = shardRecordSchema.safeParse(JSON.parse(text));
  if (!r.success) throw new Error('bench: the record does not parse');
  return performance.now() - t0;
};
const text = JSON.stringify(record(0, 0));
const parse = { bytes: text.length, firstMs: parseMs(text), secondMs: parseMs(text), warmMs: 0, afterFullCollectionsMs: null as number | null };
for (let i = 0; i < 1000; i++) parseMs(text);
parse.warmMs = parseMs(text);
if (gc) {
  for (let i = 0; i < 12; i++) gc();
  parse.afterFullCollectionsMs = parseMs(text);
}

const etcd = await EtcdProcess.start();
const pid = readdirSync('/proc').find((d) => /^\d+$/.test(d) && (() => { try { const c = readFileSync(`/proc/${d}/cmdline`, 'utf8'); return c.includes('etcd') && c.includes(`:${etcd.clientPort}`); } catch { return false; } })());
if (!pid) throw new Error('bench: etcd process not found');
/** etcd's CPU so far, every thread, in ms. */
const etcdMs = (): number => readdirSync(`/proc/${pid}/task`).reduce((a, t) => { try { return a + Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]) / 1e6; } catch { return a; } }, 0);
const selfMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

const writer = new EtcdRegistry([etcd.url], 'cost');
const watchers = Array.from({ length: WATCHERS }, () => new EtcdRegistry([etcd.url], 'cost'));
try {
  const registrations = await Promise.all([0, 1, 2, 3].map((i) => writer.registerShard(record(i, 0), 30)));
  let seen = 0;
  const stops = await Promise.all(watchers.map((w) => w.watchShards(() => void seen++)));
  const settle = async (expected: number): Promise<void> => {
    const deadline = performance.now() + 10_000;
    while (seen < expected && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  };
  await settle(WATCHERS);
  // Warm-up writes, then the measured ones, one at a time (each delivered to every watcher before the next).
  const write = async (n: number): Promise<void> => {
    const before = seen;
    await registrations[n % 4]!.update(record(n % 4, n % 7));
    await settle(before + WATCHERS);
  };
  for (let n = 0; n < 20; n++) await write(n);
  let e0 = etcdMs();
  let s0 = selfMs();
  let t0 = performance.now();
  for (let n = 0; n < WRITES; n++) await write(n);
  const writes = { etcdMsPerWrite: (etcdMs() - e0) / WRITES, thisProcessMsPerWrite: (selfMs() - s0) / WRITES, wallMsPerWrite: (performance.now() - t0) / WRITES };
  for (let n = 0; n < 20; n++) await writer.listShards();
  e0 = etcdMs();
  s0 = selfMs();
  t0 = performance.now();
  for (let n = 0; n < WRITES; n++) await writer.listShards();
  const reads = { etcdMsPerRead: (etcdMs() - e0) / WRITES, thisProcessMsPerRead: (selfMs() - s0) / WRITES, wallMsPerRead: (performance.now() - t0) / WRITES };
  for (const stop of stops) await stop();
  for (const r of registrations) await r.close();
  process.stdout.write(`${JSON.stringify({ watchers: WATCHERS, writes: WRITES, parse, recordWrite: writes, readAllRecords: reads }, null, 1)}\n`);
} finally {
  for (const w of watchers) await w.close();
  await writer.close();
  await etcd.stop();
}
