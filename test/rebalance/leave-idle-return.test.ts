import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { completeGreedy, stopAll, until } from '../helpers/rebalance-cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'leave-idle';
const RETURNS = 'expertmesh_shard_idle_memory_returns_total';
/** The leaving shard's grace after it stops serving: long past the shard's 1 s idle return, so that one would show. */
const RETIRE_GRACE_S = 3;

/** The shard's idle memory returns so far; null once its metrics endpoint is gone (the process is exiting). */
async function idleReturns(shard: ShardProcess): Promise<number | null> {
  const text = await fetch(shard.metrics!).then((r) => r.text(), () => null);
  const line = text?.split('\n').find((l) => l.startsWith(`${RETURNS} `));
  return line === undefined ? null : Number(line.split(' ').at(-1));
}

/**
 * A shard leaving (SIGTERM) stops calling for an idle memory return: a return is a full V8 collection and
 * malloc_trim (80–95 ms of CPU for a demo shard), and it would come ~1 s after the routers stop calling it, in its
 * hand-over's grace, on a core it may share with the shards that serve (docs/benchmarks.md, issue 16, round 16).
 * Real etcd, real shard processes and a real router under load; a serving shard's returns are seen first, so the
 * metric is known to count.
 */
describe('a leaving shard and its idle memory return', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let router: Awaited<ReturnType<typeof startServeProcess>>;
  const shards: ShardProcess[] = [];
  const complete = (prompt: string): ReturnType<typeof completeGreedy> => completeGreedy(router.url, 'demo', prompt, 6);

  beforeAll(async () => {
    dir = await tempDir('leave-idle');
    await makeCheckpoint({ preset: 'demo', outDir: dir.path, seed: 4 });
    const { config, fingerprint } = await readCheckpointIdentity(dir.path);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 }));
    // Without --slot: each claims a slot, and hands it over when it leaves.
    for (let i = 0; i < 2; i++) {
      shards.push(await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--listen', '127.0.0.1:0', '--lease-ttl', '3', '--retire-grace', String(RETIRE_GRACE_S)]));
    }
    router = await startServeProcess(['--model', dir.path, '--served-model-name', 'demo', '--cluster', cluster, '--etcd', etcd.url]);
    await until('router ready', async () => (await fetch(`${router.url}/ready`)).status === 200);
  });

  afterAll(async () => {
    await stopAll({ router, shards, registry, etcd, dir });
  });

  it('a serving shard returns idle memory once its calls stop; leaving, it returns none, under load until it stops serving', async () => {
    const [leaving] = shards;
    // Calls, then a spell without: the serving shard returns its idle memory.
    expect((await complete('First calls')).status).toBe(200);
    await until('an idle return by a serving shard', async () => ((await idleReturns(leaving!)) ?? 0) >= 1, 20_000);
    const atSigterm = (await idleReturns(leaving!))!;

    // Steady load while it leaves: it serves calls until its record says NOT_SERVING, then none.
    let loading = true;
    const statuses: number[] = [];
    const load = (async () => {
      for (let i = 0; loading; i++) statuses.push((await complete(`Prompt ${i % 5}`)).status);
    })();
    expect((await complete('Before the leave')).status).toBe(200);
    const slot = (await registry.listShards()).find((r) => r.address === leaving!.address)!.slot;
    const exited = new Promise<number | null>((resolve) => leaving!.process.once('exit', (code) => resolve(code)));
    leaving!.process.kill('SIGTERM');

    // Its metrics, read until the endpoint closes (after the grace); and when its record stopped saying SERVING.
    let notServingAt: number | null = null;
    let lastReadAt = 0;
    const seen: number[] = [];
    for (;;) {
      const records = await registry.listShards();
      const own = records.find((r) => r.slot === slot && r.address === leaving!.address);
      if (notServingAt === null && own?.health === 'NOT_SERVING') notServingAt = Date.now();
      const n = await idleReturns(leaving!);
      if (n === null) break;
      seen.push(n);
      lastReadAt = Date.now();
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await exited).toBe(0);
    loading = false;
    await load;

    // The hand-over ran: the shard stopped serving and its metrics were read for more than the 1 s idle wait after.
    expect(notServingAt).not.toBeNull();
    expect(lastReadAt - notServingAt!).toBeGreaterThan(1500);
    // No idle return from SIGTERM to its exit.
    expect(Math.max(...seen)).toBe(atSigterm);
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect((await registry.listShards()).map((r) => r.slot)).not.toContain(slot);
  });
});
