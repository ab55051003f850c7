import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'joining-autogroup';
/** Node `--import`: records each module the process loads, with its autogroup nice at that moment (EXPERTMESH_RECORD_LOADS). */
const RECORD_LOADS = join(import.meta.dirname, '..', 'helpers', 'record-loads.mjs');
/** Node `--import`: records the process's full collections and its log lines, with their times (EXPERTMESH_RECORD_GC). */
const RECORD_GC = join(import.meta.dirname, '..', 'helpers', 'record-gc.mjs');
const SHARD_SRC = join(import.meta.dirname, '..', '..', 'services', 'expert-shard', 'src');
const autogroupsOn = readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';

/** The autogroup nice of process `pid` (/proc/PID/autogroup: "/autogroup-N nice V"), null once it is gone. */
function autogroupNice(pid: number): number | null {
  try {
    const m = /nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * A shard process joining a cluster (real etcd, spawned in a session of its own as every launcher
 * does) starts and loads with its autogroup at nice 19, so that on a shared core it yields to the
 * shards that serve, and is back at nice 0 before its record names its experts (a serving shard
 * never runs lowered). On a kernel without autogroups the shard changes nothing, which is checked too.
 */
describe('a shard joining a cluster', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let shard: ShardProcess | null = null;
  let second: ShardProcess | null = null;
  let third: ShardProcess | null = null;

  beforeAll(async () => {
    dir = await tempDir('joining-autogroup');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 4 });
    const identity = await readCheckpointIdentity(dir.path);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config: identity.config, modelFingerprint: identity.fingerprint, version: 1, slots: ['shard-0', 'shard-1', 'shard-2'], bytesPerExpert: 1 }));
  });
  afterAll(async () => {
    await shard?.stop();
    await second?.stop();
    await third?.stop();
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('runs with its autogroup at nice 19 while it starts and loads, and at nice 0 from before its record names experts', async () => {
    const runner = autogroupNice(process.pid);
    let pid = 0;
    const samples: (number | null)[] = [];
    let atAnnounce: number | null | undefined;
    const stopWatch = await registry.watchShards((records) => {
      const named = records.some((r) => r.slot === 'shard-0' && r.layers.some((l) => l.experts.length > 0));
      if (named && atAnnounce === undefined && pid) atAnnounce = autogroupNice(pid);
    });
    // Sampled from the spawn until the shard says it listens (it does so once it serves its slot).
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        if (pid && atAnnounce === undefined) samples.push(autogroupNice(pid));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      shard = await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', 'shard-0', '--listen', '127.0.0.1:0', '--lease-ttl', '5'], { onSpawned: (p) => (pid = p) });
      const until = Date.now() + 30_000;
      while (atAnnounce === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    } finally {
      sampling = false;
      await sampler;
      await stopWatch();
    }
    if (!autogroupsOn) {
      expect(samples.every((s) => s === null)).toBe(true);
      return;
    }
    // Lowered from (close to) its start: before its record named experts, samples read 19.
    expect(samples.filter((s) => s === 19).length, `samples: ${samples.join(',')}`).toBeGreaterThan(0);
    expect(samples.every((s) => s === 19 || s === 0 || s === null), `samples: ${samples.join(',')}`).toBe(true);
    expect(atAnnounce).toBe(0);
    expect(autogroupNice(shard.pid)).toBe(0);
    // Its own autogroup, not the test runner's: this process's is untouched.
    expect(autogroupNice(process.pid)).toBe(runner);
  });

  it('loads none of its modules before its autogroup is lowered but its entry and the ones that lower it', async () => {
    // Node loads (and tsx transpiles) an entry's whole static import graph before it evaluates any of it: the lowering
    // must not wait for the ~140 modules of a shard (onnxruntime, gRPC, etcd, OpenTelemetry), loaded at full weight.
    const file = join(dir.path, 'loads.jsonl');
    second = await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', 'shard-1', '--listen', '127.0.0.1:0', '--lease-ttl', '5'], {
      nodeArgs: ['--import', RECORD_LOADS],
      env: { EXPERTMESH_RECORD_LOADS: file },
    });
    const loads = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { url: string; nice: number | null });
    // From the entry on (before it: tsx and the recorder, loaded by --import).
    const entry = loads.findIndex((l) => l.url === `file://${join(SHARD_SRC, 'main.ts')}`);
    expect(entry, loads.map((l) => l.url).join('\n')).toBeGreaterThanOrEqual(0);
    const fromEntry = loads.slice(entry);
    const lowering = new Set(['main.ts', 'joining-start.ts', 'joining-autogroup.ts'].map((f) => `file://${join(SHARD_SRC, f)}`));
    const rest = fromEntry.filter((l) => !lowering.has(l.url));
    // The shard's own modules are among those recorded (the recorder saw them load), and many more.
    for (const f of ['shard-server.ts', 'cluster-membership.ts', 'load-shard.ts']) expect(rest.map((l) => l.url)).toContain(`file://${join(SHARD_SRC, f)}`);
    expect(rest.length).toBeGreaterThan(50);
    if (!autogroupsOn) {
      expect(fromEntry.every((l) => l.nice === null)).toBe(true);
      return;
    }
    const early = rest.filter((l) => l.nice !== 19).map((l) => `${l.url} at nice ${l.nice}`);
    expect(early).toEqual([]);
  });

  it('collects its garbage in full after its load and before its record names its experts', async () => {
    // Else its start-up's and its load's garbage is collected by its first collections after it announces, at full
    // weight, as routers start calling it.
    const file = join(dir.path, 'gc.jsonl');
    let seenAt: number | null = null;
    const stopWatch = await registry.watchShards((records) => {
      if (seenAt === null && records.some((r) => r.slot === 'shard-2' && r.layers.some((l) => l.experts.length > 0))) seenAt = Date.now();
    });
    try {
      third = await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--slot', 'shard-2', '--listen', '127.0.0.1:0', '--lease-ttl', '5'], {
        nodeArgs: ['--import', RECORD_GC],
        env: { EXPERTMESH_RECORD_GC: file },
      });
      const until = Date.now() + 10_000;
      while (seenAt === null && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await stopWatch();
    }
    expect(seenAt).not.toBeNull();
    const records = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; at: number; ms?: number; line?: string });
    const loaded = records.find((r) => r.kind === 'log' && /plan \d+: loaded in/.test(r.line!));
    expect(loaded, records.map((r) => r.line ?? r.kind).join('\n')).toBeDefined();
    const between = records.filter((r) => r.kind === 'major-gc' && r.at >= loaded!.at && r.at + r.ms! <= seenAt!);
    expect(between.length, JSON.stringify(records.filter((r) => r.kind === 'major-gc'))).toBeGreaterThan(0);
  });
});
