import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type ShardRecord } from '@expertmesh/discovery';
import { modelFingerprint } from '@expertmesh/model-weights';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

const SHARD_MAIN = join(import.meta.dirname, '..', '..', 'services', 'expert-shard', 'src', 'main.ts');

/**
 * Discovery with a real etcd and real processes: shards register under leases and take their experts
 * from the plan; a router (a `serve` process) follows them as they die, join, restart and move.
 */
describe('cluster discovery over etcd', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let config: ModelConfig;
  let fingerprint: string;
  const shards = new Map<string, ReturnType<typeof spawn>>();
  let router: Awaited<ReturnType<typeof startServeProcess>> | null = null;
  const cluster = 'disc';

  // Without a joining shard's rests (12× each graph's build by default): they only delay each start here; pacing
  // has its own tests (reshaped-experts, one-load-per-host).
  const startShard = async (slot: string, modelDir = `${dir.path}/demo`, shardId = slot, placement = ['--slot', slot]): Promise<void> => {
    const child = spawnTiedToTest(process.execPath, ['--import', 'tsx', SHARD_MAIN, '--model', modelDir, '--cluster', cluster, '--etcd', etcd.url, ...placement, '--shard-id', shardId, '--listen', '127.0.0.1:0', '--lease-ttl', '2', '--intra-op-threads', '1', '--join-load-rest', '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => (JSON.parse(l) as { event: string }).event === 'listening' && resolve());
      child.once('exit', (code) => reject(new Error(`shard ${slot} exited ${code}`)));
    });
    shards.set(shardId, child);
  };
  const kill9 = async (slot: string): Promise<void> => {
    const child = shards.get(slot)!;
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    shards.delete(slot);
  };
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const live = async (): Promise<ShardRecord[]> => registry.listShards();
  const ready = async (): Promise<boolean> => (await fetch(`${router!.url}/ready`)).status === 200;
  const complete = (max = 6) =>
    new OpenAI({ baseURL: `${router!.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create({ model: 'demo', prompt: 'The cluster says', max_tokens: max, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const plan = (version: number, slots: string[]) => planPlacement({ config, modelFingerprint: fingerprint, version, slots, bytesPerExpert: 1 });

  beforeAll(async () => {
    dir = await tempDir('discovery');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 11 });
    config = await loadModelConfig(`${dir.path}/demo`);
    const ck = await SafetensorsCheckpoint.open(`${dir.path}/demo`);
    fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(plan(1, ['s0', 's1']));
  });
  afterAll(async () => {
    await router?.stop();
    for (const slot of [...shards.keys()]) await kill9(slot);
    await registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });

  it('a shard registers under a lease with the experts of its plan slot', async () => {
    await startShard('s0');
    const records = await live();
    expect(records.map((r) => r.shardId)).toEqual(['s0']);
    expect(records[0]!.layers).toEqual(plan(1, ['s0', 's1']).shards.s0);
    expect(records[0]!.planVersion).toBe(1);
    expect(records[0]!.modelFingerprint).toBe(fingerprint);
  });

  it('a router is not ready while experts lack a holder, and serves once a late shard joins', async () => {
    router = await startServeProcess(['--model', `${dir.path}/demo`, '--cluster', cluster, '--etcd', etcd.url]);
    const notReady = await fetch(`${router.url}/ready`);
    expect(notReady.status).toBe(503);
    expect(((await notReady.json()) as { reason: string }).reason).toMatch(/experts have no live holder/);
    await startShard('s1');
    await until('router ready', ready);
    const r = await complete();
    expect(r.usage!.completion_tokens).toBe(6);
  });

  it('kill -9 of a shard: its key goes when the lease runs out, the router is not ready; a restarted shard brings it back and waiting requests complete', async () => {
    await kill9('s1');
    await until('lease expiry removes s1', async () => !(await live()).some((r) => r.shardId === 's1'));
    await until('router not ready', async () => !(await ready()));
    // A request now waits (the step is retried) and completes once s1 is back.
    const pending = complete(4);
    await startShard('s1');
    const r = await pending;
    expect(r.usage!.completion_tokens).toBe(4);
    expect(await ready()).toBe(true);
  });

  it('a router restarted while shards run finds them again', async () => {
    const before = (await complete(5)).choices[0]!.text;
    await router!.stop();
    router = await startServeProcess(['--model', `${dir.path}/demo`, '--cluster', cluster, '--etcd', etcd.url]);
    await until('restarted router ready', ready);
    expect((await complete(5)).choices[0]!.text).toBe(before);
  });

  it('etcd restarted: shards register again and routing goes on', async () => {
    await etcd.kill();
    await etcd.run();
    await until('both shards registered again', async () => (await live().catch(() => [])).length === 2, 30_000);
    await until('router ready after etcd restart', ready, 30_000);
    expect((await complete(3)).usage!.completion_tokens).toBe(3);
  });

  it('a plan change moves experts between shards while requests run, and none fails', async () => {
    const next = plan(2, ['s1', 's0']); // swap the two slots' experts
    const requests = Array.from({ length: 6 }, (_, i) => complete(250 + i));
    await until('requests running', async () => ((await (await fetch(`${router!.url}/health`)).json()) as { running: number }).running === 6);
    await registry.putPlan(next);
    await until('shards moved to plan v2', async () => (await live()).every((r) => r.planVersion === 2));
    // The move happened while the requests were still generating.
    expect(((await (await fetch(`${router!.url}/health`)).json()) as { running: number }).running).toBeGreaterThan(0);
    const results = await Promise.all(requests);
    results.forEach((r, i) => expect(r.usage!.completion_tokens).toBe(250 + i));
    await until('shards report plan v2', async () => (await live()).every((r) => r.planVersion === 2));
    const s0 = (await live()).find((r) => r.shardId === 's0')!;
    expect(s0.layers).toEqual(next.shards.s0);
    // The router agrees: it sees plan v2 and no shard on an older one.
    await until('router on plan v2', async () => {
      const state = (await (await fetch(`${router!.url}/dashboard/state`)).json()) as { plan: { version: number; lagging: string[] } };
      return state.plan.version === 2 && state.plan.lagging.length === 0;
    });
    expect((await complete(3)).usage!.completion_tokens).toBe(3);
  });

  it('a shard of another model is refused by the router, even when it holds the experts that are missing', async () => {
    const other = `${dir.path}/other`;
    await makeCheckpoint({ preset: 'demo', outDir: other, seed: 12 });
    // The experts s0 holds, but a checkpoint with another fingerprint (given by hand: a shard never
    // follows a plan made for another model).
    const s0 = plan(1, ['s0', 's1']).shards.s0!;
    await startShard('s0', other, 'intruder', ['--experts', s0[0]!.experts.join(',')]);
    await until('intruder registered', async () => (await live()).some((r) => r.shardId === 'intruder'));
    await kill9('s0');
    await until('s0 gone', async () => !(await live()).some((r) => r.shardId === 's0'));
    await until('router reports the refusal', async () => {
      const res = await fetch(`${router!.url}/ready`);
      const body = (await res.json()) as { reason?: string };
      return res.status === 503 && (body.reason ?? '').includes('refused shards of another model: intruder');
    });
  });
});
