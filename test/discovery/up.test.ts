import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { modelFingerprint } from '@expertmesh/model-weights';
import { loadModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { CHANNEL_OPTIONS, expertmeshV1 } from '@expertmesh/wire';
import { CLI, runCli } from '../helpers/cli.js';
import { EtcdServer } from '../helpers/etcd-server.js';
import { commandLine, descendants } from '../helpers/process-tree.js';
import { startFakeShard } from '../helpers/fake-shard.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

/** README's main job: `expertmesh up` brings up etcd, shards and a router, answers, and Ctrl-C stops it all. */
describe('expertmesh up', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('up');
  });
  afterAll(async () => dir?.remove());

  const runUp = async (extra: string[]): Promise<{ etcd: string | null; registry: string | null }> => {
    // From a working directory outside the checkout, as in the container image: nothing may resolve from the cwd.
    const child = spawnTiedToTest(process.execPath, [CLI, 'up', '--model', `${dir.path}/demo`, '--shards', '2', '--port', '0', ...extra], { cwd: dir.path });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const ready = await new Promise<{ url: string; shards: string[]; etcd: string | null; registry: string | null; tls: string }>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = JSON.parse(l) as { event: string; url: string; shards: string[]; etcd: string | null; registry: string | null; tls: string };
        if (m.event === 'ready') resolve(m);
      });
      void exited.then((code) => reject(new Error(`up exited ${code}: ${stderr}`)));
    });
    try {
      expect(ready.shards).toHaveLength(2);
      // A cluster up has just planned: its shards load without a joining shard's rests (no shard serves yet).
      const shards = descendants(child.pid!).map((p) => commandLine(p.pid)).filter((c) => c.includes('expert-shard'));
      expect(shards).toHaveLength(2);
      for (const c of shards) expect(c).toMatch(/--join-load-rest 0\b/);
      const client = new OpenAI({ baseURL: `${ready.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5 });
      expect(r.choices[0]!.finish_reason).toBe('length');
      expect(r.usage!.completion_tokens).toBe(5);
      // Secure by default: shards take only mutual TLS, the embedded registry only its token.
      const plain = new (expertmeshV1().ExpertShardService)(ready.shards[0]!, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      const refused = await new Promise<number>((resolve) => plain.GetShardInfo({}, { deadline: Date.now() + 5000 }, (e) => resolve(e?.code ?? grpc.status.OK)));
      plain.close();
      expect(refused).toBe(grpc.status.UNAVAILABLE);
      if (ready.registry) expect((await fetch(`${ready.registry}/v1/shards`)).status).toBe(401);
    } finally {
      // Ctrl-C, also when an assertion failed: up stops everything it started.
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    // Everything it started is gone: the API, and etcd or the embedded registry.
    await expect(fetch(`${ready.url}/health`)).rejects.toThrow();
    await expect(fetch(ready.etcd ? `${ready.etcd.replace('https:', 'http:')}/health` : `${ready.registry}/v1/shards`)).rejects.toThrow();
    expect(existsSync(ready.tls)).toBe(false); // the throwaway CA and keys are gone too
    return { etcd: ready.etcd, registry: ready.registry };
  };

  it('makes the demo checkpoint, starts the cluster with etcd, answers a chat completion, and stops cleanly on SIGINT', async () => {
    const r = await runUp([]);
    // up's own etcd serves TLS with client certificates of its throwaway CA.
    expect(r.etcd).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(r.registry).toBeNull();
  });

  it('without etcd, runs the same cluster over the embedded registry', async () => {
    const r = await runUp(['--embedded-registry']);
    expect(r.etcd).toBeNull();
    expect(r.registry).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('never writes into a folder it did not create: a --model folder without a checkpoint is refused, its files untouched', async () => {
    const theirs = join(dir.path, 'theirs');
    await mkdir(theirs);
    await writeFile(join(theirs, 'model.safetensors'), 'the user\'s own bytes');
    const r = await runCli(['up', '--model', theirs, '--shards', '1', '--port', '0', '--embedded-registry'], { timeoutMs: 60_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/holds no checkpoint|incomplete checkpoint/);
    expect(await readFile(join(theirs, 'model.safetensors'), 'utf8')).toBe('the user\'s own bytes');
    expect(existsSync(join(theirs, 'config.json'))).toBe(false);
  });

  it('refuses to serve beyond loopback without an API key unless --insecure', async () => {
    const r = await runCli(['up', '--model', `${dir.path}/demo`, '--host', '0.0.0.0', '--port', '0'], { timeoutMs: 60_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refusing to expose the HTTP API on 0\.0\.0\.0 without authentication/);
  });

  it('pointed at an existing cluster, it neither replaces its plan nor takes over a live shard id', async () => {
    const etcd = await EtcdServer.start();
    const registry = new EtcdRegistry([etcd.url], 'theirs');
    try {
      const model = `${dir.path}/demo`;
      const config = await loadModelConfig(model);
      const ck = await SafetensorsCheckpoint.open(model);
      const fingerprint = await modelFingerprint(config, ck);
      await ck.close();
      // A plan for other slots: up refuses, the plan stays.
      const other = planPlacement({ config, modelFingerprint: fingerprint, version: 7, slots: ['a', 'b'], bytesPerExpert: 1 });
      await registry.putPlan(other);
      const refused = await runCli(['up', '--model', model, '--shards', '2', '--port', '0', '--etcd', etcd.url, '--cluster', 'theirs'], { timeoutMs: 60_000 });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/already has plan v7 with slots a, b, not shard-0, shard-1: up does not replace a cluster's plan/);
      expect(await registry.getPlan()).toEqual(other);
      // Its own slots, but shard-0 held by a live process: up's shard-0 cannot claim the id, and the holder's key survives up.
      const mine = planPlacement({ config, modelFingerprint: fingerprint, version: 8, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 });
      await registry.putPlan(mine);
      // A live holder: its address answers GetShardInfo as shard-0 (a dead one's id would be taken over at once).
      const live = await startFakeShard({ shardId: 'shard-0', modelFingerprint: fingerprint, layers: [], computeDtype: 'float32', weightBytes: 0, residentBytes: 0, hiddenSize: config.hiddenSize }, (req) => ({ requestId: req.requestId, computeMicros: 0, queueMicros: 0 }));
      const holder = await registry.registerShard({ shardId: 'shard-0', address: live.address, modelFingerprint: fingerprint, layers: [], computeDtype: 'float32', weightBytes: 0, health: 'SERVING', planVersion: 8, slot: 'shard-0' }, 60);
      const taken = await runCli(['up', '--model', model, '--shards', '2', '--port', '0', '--etcd', etcd.url, '--cluster', 'theirs'], { timeoutMs: 90_000 });
      expect(taken.code).not.toBe(0);
      expect(taken.stderr).toMatch(/shard id shard-0 is registered by another live process/);
      expect((await registry.listShards()).find((r) => r.shardId === 'shard-0')?.address).toBe(live.address);
      expect((await registry.getPlan())?.version).toBe(8);
      await holder.close();
      await live.stop();
    } finally {
      await registry.close();
      await etcd.stop();
    }
  });
});
