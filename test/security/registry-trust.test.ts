import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, HttpRegistry, keys, MemoryRegistry, planPlacement, RegistryServer, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { RegistryShardSource } from '@expertmesh/router';
import { modelFingerprint } from '@expertmesh/model-weights';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startFakeShard } from '../helpers/fake-shard.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { startShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';
import { makeTlsFixtures } from '../helpers/tls-fixtures.js';

/**
 * What anyone who can write to etcd can do to a router, and what it cannot: bad records are ignored
 * (never a crash), a shard is routed to only when it proves itself over mutual TLS and GetShardInfo,
 * and a plan that leaves experts without a holder is not followed.
 */
describe('registry records are not trusted as declared', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let raw: Etcd3;
  let config: ModelConfig;
  let fingerprint: string;
  let tls: Awaited<ReturnType<typeof makeTlsFixtures>>;
  let router: Awaited<ReturnType<typeof startServeProcess>> | null = null;
  const shards: Awaited<ReturnType<typeof startShardProcess>>[] = [];
  const fakes: Awaited<ReturnType<typeof startFakeShard>>[] = [];
  const held: { close(): Promise<void> }[] = [];
  const cluster = 'trust';
  let plan1: PlacementPlan;

  const model = (): string => join(dir.path, 'demo');
  const tlsArgs = (f: { cert: string; key: string; ca: string }) => ['--tls-cert', f.cert, '--tls-key', f.key, '--tls-ca', f.ca];
  const startShard = async (slot: string) => {
    const s = await startShardProcess(['--model', model(), '--cluster', cluster, '--etcd', etcd.url, '--slot', slot, '--shard-id', slot, '--listen', '127.0.0.1:0', '--lease-ttl', '3', ...tlsArgs(tls.files.shard)]);
    shards.push(s);
    return s;
  };
  const record = (shardId: string, address: string, layers: ShardRecord['layers']): ShardRecord => ({ shardId, address, modelFingerprint: fingerprint, layers, computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion: 1, slot: '' });
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const metric = async (line: RegExp): Promise<number> => {
    const m = line.exec(await (await fetch(`${router!.url}/metrics`)).text());
    return m ? Number(m[1]) : 0;
  };
  const complete = async (): Promise<Response> =>
    fetch(`${router!.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'Trust', max_tokens: 3, temperature: 0, ignore_eos: true }) });

  beforeAll(async () => {
    dir = await tempDir('registry-trust');
    await makeCheckpoint({ preset: 'demo', outDir: model(), seed: 21 });
    config = await loadModelConfig(model());
    const ck = await SafetensorsCheckpoint.open(model());
    fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    tls = await makeTlsFixtures(join(dir.path, 'tls'));
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    raw = new Etcd3({ hosts: [etcd.url] });
    plan1 = planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: ['s0', 's1'], bytesPerExpert: 1 });
    await registry.putPlan(plan1);
    await startShard('s0');
  });
  afterAll(async () => {
    await router?.stop();
    for (const s of shards) await s.stop();
    for (const f of fakes) await f.stop();
    for (const h of held) await h.close().catch(() => undefined);
    raw?.close();
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('a record naming expert 9999, and a key that is not JSON, are ignored with a metric: the router starts with them present and keeps serving', async () => {
    held.push(await registry.registerShard(record('bad', '127.0.0.1:9', [{ layer: config.moeLayers[0]!, experts: [9999] }]), 30));
    await raw.put(keys.shard(cluster, 'garbage')).value('{not json');
    router = await startServeProcess(['--model', model(), '--cluster', cluster, '--etcd', etcd.url, ...tlsArgs(tls.files.router)]);
    await until('both rejections counted', async () => (await metric(/expertmesh_registry_rejected_total\{kind="shard_record"\} (\d+)/)) >= 2);
    expect((await fetch(`${router.url}/health`)).status).toBe(200);
    expect(router.process.exitCode).toBeNull();
  });

  it('records copying the real fingerprint are not routed to unless the shard proves itself over mutual TLS and GetShardInfo', async () => {
    const s1Layers = plan1.shards.s1!;
    const H = config.hiddenSize;
    const infoOf = (shardId: string) => ({ shardId, modelFingerprint: fingerprint, layers: s1Layers, computeDtype: 'float32', weightBytes: 1, residentBytes: 1, hiddenSize: H });
    const nan = (req: { requestId: number; hidden: { shape: number[] } | null }) => ({ requestId: req.requestId, output: { dtype: 'TENSOR_DTYPE_FLOAT32' as const, shape: [req.hidden!.shape[0]!, H], data: Buffer.alloc(req.hidden!.shape[0]! * H * 4, 0xff) }, computeMicros: 1, queueMicros: 0 });
    const serverTls = async (f: { cert: string; key: string; ca: string }) => grpc.ServerCredentials.createSsl(await readFile(f.ca), [{ private_key: await readFile(f.key), cert_chain: await readFile(f.cert) }], false);
    // An impostor in plaintext, one with a certificate of another CA, one with a certificate of the
    // right CA for another host: each lies about everything else.
    fakes.push(await startFakeShard(infoOf('plain'), nan));
    fakes.push(await startFakeShard(infoOf('otherca'), nan, await serverTls(tls.files.otherCa)));
    fakes.push(await startFakeShard(infoOf('wronghost'), nan, await serverTls(tls.files.wrongHost)));
    for (const f of fakes) held.push(await registry.registerShard(record(`forged-${f.address}`, f.address, s1Layers), 30));
    // And a record that names the real s0's address under another shard id.
    const s0 = (await registry.listShards()).find((r) => r.shardId === 's0')!;
    held.push(await registry.registerShard(record('s0-clone', s0.address, s1Layers), 30));
    await until('the router names the unconfirmed shards', async () => {
      const res = await fetch(`${router!.url}/ready`);
      const reason = ((await res.json()) as { reason?: string }).reason ?? '';
      return res.status === 503 && reason.includes('s0-clone (it says it is shard s0') && fakes.every((f) => reason.includes(`forged-${f.address}`));
    });
    expect(await metric(/expertmesh_registry_rejected_total\{kind="unverified_shard"\} (\d+)/)).toBeGreaterThanOrEqual(4);
    // The real s1 joins: the router is ready, answers, and no impostor was ever sent a token.
    await startShard('s1');
    await until('router ready', async () => (await fetch(`${router!.url}/ready`)).status === 200);
    const res = await complete();
    expect(res.status).toBe(200);
    expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
    for (const f of fakes) expect(f.calls()).toBe(0);
  });

  it('a plan that leaves experts without a holder is not followed: shards keep their experts and the router keeps serving', async () => {
    const empty: PlacementPlan = { version: 2, modelFingerprint: fingerprint, shards: { s0: [], s1: [] } };
    await registry.putPlan(empty);
    await until('the router counts the rejected plan', async () => (await metric(/expertmesh_registry_rejected_total\{kind="plan"\} (\d+)/)) >= 1);
    await new Promise((r) => setTimeout(r, 1000));
    const live = await registry.listShards();
    for (const id of ['s0', 's1']) {
      const r = live.find((x) => x.shardId === id)!;
      expect(r.planVersion).toBe(1);
      expect(r.layers).toEqual(plan1.shards[id]);
    }
    expect((await fetch(`${router!.url}/ready`)).status).toBe(200);
    expect((await complete()).status).toBe(200);
  });
});

describe('the embedded registry with a bad record', () => {
  it('a record naming an expert the model lacks never freezes the router’s view: later shards still join it', async () => {
    const dir = await tempDir('embedded-trust');
    const server = await RegistryServer.start(new MemoryRegistry());
    const registry = new HttpRegistry(server.url, server.token);
    let source: RegistryShardSource | null = null;
    let fake: Awaited<ReturnType<typeof startFakeShard>> | null = null;
    try {
      await makeCheckpoint({ preset: 'tiny', outDir: join(dir.path, 'tiny'), seed: 2 });
      const identity = await readCheckpointIdentity(join(dir.path, 'tiny'));
      const { config, fingerprint } = identity;
      const layers = config.moeLayers.map((layer) => ({ layer, experts: Array.from({ length: config.nRoutedExperts }, (_, e) => e) }));
      const rec = (shardId: string, address: string, l: ShardRecord['layers']): ShardRecord => ({ shardId, address, modelFingerprint: fingerprint, layers: l, computeDtype: 'float32', weightBytes: 1, health: 'SERVING', planVersion: 0, slot: '' });
      const rejected: string[] = [];
      source = await RegistryShardSource.start(registry, identity, { onRejected: (kind, id) => rejected.push(`${kind}:${id}`) });
      const bad = await registry.registerShard(rec('bad', '127.0.0.1:9', [{ layer: config.moeLayers[0]!, experts: [9999] }]), 30);
      fake = await startFakeShard({ shardId: 'good', modelFingerprint: fingerprint, layers, computeDtype: 'float32', weightBytes: 1, residentBytes: 1, hiddenSize: config.hiddenSize }, (req) => ({ requestId: req.requestId, computeMicros: 0, queueMicros: 0 }));
      const good = await registry.registerShard(rec('good', fake.address, layers), 30);
      const deadline = Date.now() + 20_000;
      while (source.current().connections.length !== 1 || (await source.notReadyReason()) !== null) {
        if (Date.now() > deadline) throw new Error('the good shard never joined the view');
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(source.current().connections.map((c) => c.address)).toEqual([fake.address]);
      expect(rejected).toContain('shard_record:bad');
      await bad.close();
      await good.close();
    } finally {
      await source?.close();
      await registry.close();
      await fake?.stop();
      await server.close();
      await dir.remove();
    }
  });
});
