import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { startServeProcess, waitForHealth } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** Admission: a full queue answers 429 with Retry-After; KV memory on demand (or reserved, the old scheme). */
describe('admission control', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const model = 'demo';
  beforeAll(async () => {
    dir = await tempDir('admission');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 2 });
  });
  afterAll(async () => dir?.remove());

  it('a full queue gets 429 with Retry-After; accepted requests still complete', async () => {
    const server = await startServeProcess(['--model', `${dir.path}/demo`, '--max-batch-size', '1', '--max-waiting', '1']);
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const long = { model, prompt: 'go', max_tokens: 300, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
      const running = client.completions.create(long);
      await waitForHealth(server.url, (h) => h.running === 1);
      const waiting = client.completions.create({ ...long, max_tokens: 2 });
      await waitForHealth(server.url, (h) => h.waiting === 1);
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...long, max_tokens: 2 }) });
      expect(res.status).toBe(429);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(((await res.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
      const [a, b] = await Promise.all([running, waiting]);
      expect(a.usage!.completion_tokens).toBe(300);
      expect(b.usage!.completion_tokens).toBe(2);
    } finally {
      await server.stop();
    }
  });

  it('with --kv-admission reserve, a request the KV cache cannot hold next to running ones waits for memory', async () => {
    // 256 cache tokens: each request reserves ~170 (prompt + max_tokens), so only one fits at a time.
    const server = await startServeProcess(['--model', `${dir.path}/demo`, '--kv-cache-tokens', '256', '--kv-admission', 'reserve']);
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const req = { model, prompt: 'x', max_tokens: 160, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
      const first = client.completions.create(req);
      await waitForHealth(server.url, (h) => h.running === 1);
      const second = client.completions.create(req);
      const h = await waitForHealth(server.url, (x) => x.waiting === 1);
      expect(h).toMatchObject({ running: 1, waiting: 1 });
      const [a, b] = await Promise.all([first, second]);
      expect(a.choices[0]!.finish_reason).toBe('length');
      expect(b.choices[0]!.finish_reason).toBe('length');
      expect(b.usage!.completion_tokens).toBe(160);
    } finally {
      await server.stop();
    }
  });

  it('on demand (the default), the same two requests run together and both finish, one preempted when the cache runs out', async () => {
    const server = await startServeProcess(['--model', `${dir.path}/demo`, '--kv-cache-tokens', '256']);
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const req = { model, prompt: 'x', max_tokens: 160, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
      const alone = await client.completions.create(req);
      const both = Promise.all([client.completions.create(req), client.completions.create(req)]);
      expect((await waitForHealth(server.url, (x) => x.running === 2)).running).toBe(2);
      const [a, b] = await both;
      for (const r of [a, b]) {
        expect(r.choices[0]!.finish_reason).toBe('length');
        expect(r.choices[0]!.text).toBe(alone.choices[0]!.text);
      }
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      expect(Number(/^expertmesh_preemptions_total (\d+)/m.exec(metrics)![1])).toBeGreaterThan(0);
    } finally {
      await server.stop();
    }
  });

  it('a request larger than the whole cache is refused with 400, not queued forever', async () => {
    const server = await startServeProcess(['--model', `${dir.path}/demo`, '--kv-cache-tokens', '256']);
    try {
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: 'x', max_tokens: 400 }) });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/maximum context length is 256 tokens/);
    } finally {
      await server.stop();
    }
  });
});
