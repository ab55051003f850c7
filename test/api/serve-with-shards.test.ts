import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { LocalCluster } from '@expertmesh/local-cluster';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** The API does not care where experts run: a router process over shard processes. */
describe('serving over expert shards', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('serve-shards');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 3 });
  });
  afterAll(async () => dir?.remove());

  it('gives the same greedy completion as in-process experts, and /ready follows the shards', async () => {
    const modelDir = `${dir.path}/demo`;
    const cluster = await LocalCluster.start({ modelDir, shards: 2, nRoutedExperts: 64, shardArgs: ['--intra-op-threads', '1'] });
    let remote: Awaited<ReturnType<typeof startServeProcess>> | undefined;
    let local: Awaited<ReturnType<typeof startServeProcess>> | undefined;
    try {
      remote = await startServeProcess(['--model', modelDir, '--shard-addresses', cluster.addresses.join(','), '--wire-dtype', 'float32']);
      local = await startServeProcess(['--model', modelDir]);
      const ask = (url: string) =>
        new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 }).chat.completions.create({
          model: 'demo',
          messages: [{ role: 'user', content: 'Name three colours.' }],
          max_tokens: 8,
          temperature: 0,
          logprobs: true,
        });
      const [a, b] = await Promise.all([ask(remote.url), ask(local.url)]);
      const tokens = (r: OpenAI.ChatCompletion): string[] => r.choices[0]!.logprobs!.content!.map((t) => t.token);
      expect(tokens(a)).toEqual(tokens(b));
      expect((await fetch(`${remote.url}/ready`)).status).toBe(200);

      // A shard gone: experts without a live holder, so the router is not ready.
      cluster.shards[1]!.process.kill('SIGKILL');
      await new Promise((r) => cluster.shards[1]!.process.once('exit', r));
      const notReady = await fetch(`${remote.url}/ready`);
      expect(notReady.status).toBe(503);
      expect(((await notReady.json()) as { reason: string }).reason).toContain(cluster.addresses[1]);
      expect((await fetch(`${remote.url}/health`)).status).toBe(200);
    } finally {
      await Promise.all([remote?.stop(), local?.stop()]);
      await cluster.stop();
    }
  });
});
