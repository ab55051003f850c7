import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { streamThroughFault, type StreamedCompletion } from '../helpers/completion-stream.js';
import { FailoverCluster } from '../helpers/failover-cluster.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * Without a replica, a step waits for a holder of the dead shard's experts, at most
 * --step-retry-seconds: a shard back in time costs nothing, and a request that fails after the wait
 * ends with an error event in its stream, never a silent cut.
 */
describe('a shard without replicas', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  /** The checkpoint folder: its name, demo, is the served model's. */
  let model: string;
  const started: ShardProcess[] = [];
  const shard = async (experts: string, listen = '127.0.0.1:0'): Promise<ShardProcess> => {
    const s = await startShardProcess(['--model', model, '--experts', experts, '--listen', listen]);
    started.push(s);
    return s;
  };
  const router = async (addresses: string[], retrySeconds: number): Promise<Awaited<ReturnType<typeof startServeProcess>>> =>
    startServeProcess(['--model', model, '--shard-addresses', addresses.join(','), '--step-retry-seconds', String(retrySeconds)]);
  /** Streams a completion and runs `fault` once a few tokens have come. */
  const streamWith = async (url: string, fault: () => Promise<void>): Promise<StreamedCompletion> =>
    (await streamThroughFault(url, [{ model: 'demo', prompt: 'No replica here', max_tokens: 200 }], fault))[0]!;

  beforeAll(async () => {
    dir = await tempDir('no-replica');
    model = `${dir.path}/demo`;
    await makeCheckpoint({ preset: 'demo', outDir: model, seed: 29 });
  });
  afterAll(async () => {
    await Promise.all(started.map((s) => s.kill()));
    await dir?.remove();
  });

  it('a request that cannot go on ends with an error event, then [DONE]', async () => {
    const [a, b] = await Promise.all([shard('0-31'), shard('32-63')]);
    const r = await router([a.address, b.address], 2);
    try {
      const result = await streamWith(r.url, () => b.kill());
      expect(result.tokens.length).toBeGreaterThanOrEqual(3);
      expect(result.tokens.length).toBeLessThan(200);
      expect(result.done).toBe(true); // not cut: the stream was ended by the server
      expect(result.error).toMatch(/no live shard holds expert \d+ of layer \d+/);
    } finally {
      await r.stop();
    }
  });

  it('a shard back within --step-retry-seconds (same address): the stream just pauses, then completes', async () => {
    const a = await shard('0-31');
    const b = await shard('32-63');
    const r = await router([a.address, b.address], 60);
    try {
      const result = await streamWith(r.url, async () => {
        await b.kill();
        await shard('32-63', b.address); // its health check passes: it gets work again
      });
      expect({ error: result.error, done: result.done, tokens: result.tokens.length }).toEqual({ error: null, done: true, tokens: 200 });
    } finally {
      await r.stop();
    }
  });

  it('registry cluster: a shard killed with kill -9 and started again (a new port, its slot) within --step-retry-seconds costs a pause, not the stream', async () => {
    // Each expert held once; the dead shard's 60 s lease outlives the test: only its successor's record moves the router on.
    const cluster = await FailoverCluster.start({ modelDir: model, slots: ['s0', 's1'], redundantExperts: 0, leaseTtlSeconds: 60, serveArgs: ['--step-retry-seconds', '60'] });
    try {
      const victim = cluster.shards.get('s1')!;
      const result = await streamWith(cluster.url, async () => {
        await victim.kill();
        const back = await cluster.startShard('s1');
        expect(back.address).not.toBe(victim.address);
      });
      expect({ error: result.error, done: result.done, tokens: result.tokens.length }).toEqual({ error: null, done: true, tokens: 200 });
      expect(await cluster.metric('expertmesh_shard_suspicions_total', { shard: victim.address })).toBeGreaterThanOrEqual(1);
    } finally {
      await cluster.stop();
    }
  });
});
