import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { enableEtcdAuth, EtcdRegistry, type EtcdSecurity, type ShardRecord } from '@expertmesh/discovery';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';
import { makeTlsFixtures } from '../helpers/tls-fixtures.js';

const record: ShardRecord = { shardId: 'x', address: '127.0.0.1:1', modelFingerprint: 'f00', layers: [], computeDtype: 'float32', weightBytes: 0, health: 'SERVING', planVersion: 0, slot: '' };

/** etcd with TLS, client certificates and users, as docs/deployment.md sets it up: only the right credentials get in. */
describe('etcd over TLS with client certificates and users', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let tls: Awaited<ReturnType<typeof makeTlsFixtures>>;
  let client: EtcdSecurity['tls'];
  const password = 'correct horse battery staple';

  const attempt = async (security: EtcdSecurity, cluster = 'prod'): Promise<string> => {
    const registry = new EtcdRegistry([etcd.url], cluster, security);
    try {
      await Promise.race([registry.listShards(), new Promise((_, reject) => setTimeout(() => reject(new Error('no answer in 10 s')), 10_000))]);
      return 'ok';
    } catch (e) {
      return (e as Error).message;
    } finally {
      await registry.close();
    }
  };

  beforeAll(async () => {
    dir = await tempDir('etcd-security');
    tls = await makeTlsFixtures(join(dir.path, 'tls'));
    const f = tls.files;
    etcd = await EtcdServer.start({ tls: { server: f.shard, probe: f.router } });
    const pem = async (x: { cert: string; key: string; ca: string }) => ({ ca: await readFile(x.ca), cert: await readFile(x.cert), key: await readFile(x.key) });
    client = await pem(f.router);
    await enableEtcdAuth(etcd.url, { tls: client }, 'root-secret', [
      { name: 'prod', password, cluster: 'prod' },
      { name: 'staging', password: 'other', cluster: 'staging' },
    ]);
  });
  afterAll(async () => {
    await etcd?.stop();
    await dir?.remove();
  });

  it('a client with a certificate of the CA and its user’s password registers shards and stores plans', async () => {
    const registry = new EtcdRegistry([etcd.url], 'prod', { tls: client, auth: { username: 'prod', password } });
    try {
      const reg = await registry.registerShard(record, 5);
      expect((await registry.listShards()).map((r) => r.shardId)).toEqual(['x']);
      await registry.putPlan({ version: 1, modelFingerprint: 'f00', shards: { s: [] } });
      expect((await registry.getPlan())?.version).toBe(1);
      await reg.close();
    } finally {
      await registry.close();
    }
  });

  it('refuses no client certificate, another CA’s certificate, a wrong password, and another cluster’s keys', async () => {
    const other = tls.files.otherCa;
    const auth = { username: 'prod', password };
    expect(await attempt({ tls: { ca: client!.ca }, auth })).not.toBe('ok');
    expect(await attempt({ tls: { ca: client!.ca, cert: await readFile(other.cert), key: await readFile(other.key) }, auth })).not.toBe('ok');
    expect(await attempt({ tls: client, auth: { username: 'prod', password: 'wrong' } })).toMatch(/authentication failed|invalid/i);
    expect(await attempt({ tls: client })).toMatch(/user name is empty|permission denied|auth/i);
    expect(await attempt({ tls: client, auth: { username: 'staging', password: 'other' } }, 'prod')).toMatch(/permission denied/i);
  });

  it('a shard joins with --etcd-ca/--etcd-cert/--etcd-key, --etcd-user and EXPERTMESH_ETCD_PASSWORD', async () => {
    const model = join(dir.path, 'tiny');
    await makeCheckpoint({ preset: 'tiny', outDir: model, seed: 1 });
    const f = tls.files.router;
    const shard = await startShardProcess(
      ['--model', model, '--experts', 'all', '--cluster', 'prod', '--etcd', etcd.url, '--etcd-ca', f.ca, '--etcd-cert', f.cert, '--etcd-key', f.key, '--etcd-user', 'prod', '--shard-id', 'secure-shard', '--listen', '127.0.0.1:0'],
      { env: { EXPERTMESH_ETCD_PASSWORD: password } },
    );
    const registry = new EtcdRegistry([etcd.url], 'prod', { tls: client, auth: { username: 'prod', password } });
    try {
      expect((await registry.listShards()).map((r) => r.shardId)).toContain('secure-shard');
    } finally {
      await registry.close();
      await shard.stop();
    }
  });
});
