import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { tempDir } from '../helpers/temp-dir.js';

/** README's main job: `expertmesh up` brings up etcd, shards and a router, answers, and Ctrl-C stops it all. */
describe('expertmesh up', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('up');
  });
  afterAll(async () => dir?.remove());

  const runUp = async (extra: string[]): Promise<{ etcd: string | null; registry: string | null }> => {
    const child = spawn(process.execPath, [CLI, 'up', '--model', `${dir.path}/demo`, '--shards', '2', '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const ready = await new Promise<{ url: string; shards: string[]; etcd: string | null; registry: string | null }>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = JSON.parse(l) as { event: string; url: string; shards: string[]; etcd: string | null; registry: string | null };
        if (m.event === 'ready') resolve(m);
      });
      void exited.then((code) => reject(new Error(`up exited ${code}: ${stderr}`)));
    });
    try {
      expect(ready.shards).toHaveLength(2);
      const client = new OpenAI({ baseURL: `${ready.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5 });
      expect(r.choices[0]!.finish_reason).toBe('length');
      expect(r.usage!.completion_tokens).toBe(5);
    } finally {
      // Ctrl-C, also when an assertion failed: up stops everything it started.
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    // Everything it started is gone: the API, and etcd or the embedded registry.
    await expect(fetch(`${ready.url}/health`)).rejects.toThrow();
    await expect(fetch(ready.etcd ? `${ready.etcd}/health` : `${ready.registry}/v1/shards`)).rejects.toThrow();
    return { etcd: ready.etcd, registry: ready.registry };
  };

  it('makes the demo checkpoint, starts the cluster with etcd, answers a chat completion, and stops cleanly on SIGINT', async () => {
    const r = await runUp([]);
    expect(r.etcd).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(r.registry).toBeNull();
  });

  it('without etcd, runs the same cluster over the embedded registry', async () => {
    const r = await runUp(['--embedded-registry']);
    expect(r.etcd).toBeNull();
    expect(r.registry).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });
});
