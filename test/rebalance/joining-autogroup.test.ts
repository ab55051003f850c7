import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'joining-autogroup';
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

  beforeAll(async () => {
    dir = await tempDir('joining-autogroup');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 4 });
    const identity = await readCheckpointIdentity(dir.path);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config: identity.config, modelFingerprint: identity.fingerprint, version: 1, slots: ['shard-0'], bytesPerExpert: 1 }));
  });
  afterAll(async () => {
    await shard?.stop();
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
});
