import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { runCli } from '../helpers/cli.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } };

/** The HTTP API of a real router process: keys, content types and prompt sizes are checked before any work. */
describe('API hardening', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof startServeProcess>>;
  const MAX_PROMPT_BYTES = 3_000_000;

  const post = (path: string, body: unknown, headers: Record<string, string> = { authorization: 'Bearer key-two' }) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  beforeAll(async () => {
    dir = await tempDir('api-hardening');
    await makeCheckpoint({ preset: 'demo', outDir: join(dir.path, 'demo'), seed: 3 });
    server = await startServeProcess(['--model', join(dir.path, 'demo'), '--api-key', 'key-three', '--max-prompt-bytes', String(MAX_PROMPT_BYTES), '--kv-cache-tokens', '4096'], { EXPERTMESH_API_KEY: 'key-one,key-two' });
  });
  afterAll(async () => {
    await server?.stop();
    await dir?.remove();
  });

  it('a missing or wrong API key gets 401 in OpenAI’s error shape; each configured key works', async () => {
    const request = { model: 'demo', prompt: 'Hi', max_tokens: 2 };
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: 'key-one' }] as Record<string, string>[]) {
      const res = await post('/v1/completions', request, headers);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      const body = (await res.json()) as ErrorBody;
      expect(body.error.type).toBe('invalid_request_error');
      expect(body.error.code).toBe('invalid_api_key');
    }
    for (const key of ['key-one', 'key-two', 'key-three']) expect((await post('/v1/completions', request, { authorization: `Bearer ${key}` })).status).toBe(200);
    expect((await fetch(`${server.url}/v1/models`)).status).toBe(401);
  });

  it('/health and /ready stay open; /metrics and /dashboard ask for the key unless made public', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect((await fetch(`${server.url}/ready`)).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${server.url}/dashboard`)).status).toBe(401);
    const metrics = await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer key-one' } });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/expertmesh_auth_failures_total [1-9]/);
    const open = await startServeProcess(['--model', join(dir.path, 'demo'), '--api-key', 'k', '--public-endpoints', 'metrics,dashboard', '--kv-cache-tokens', '1024']);
    try {
      expect((await fetch(`${open.url}/metrics`)).status).toBe(200);
      expect((await fetch(`${open.url}/dashboard`)).status).toBe(200);
      expect((await fetch(`${open.url}/v1/models`)).status).toBe(401);
    } finally {
      await open.stop();
    }
  });

  it('refuses a body that is not application/json with 415', async () => {
    const res = await post('/v1/chat/completions', JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'x' }] }), { authorization: 'Bearer key-one', 'content-type': 'text/plain' });
    expect(res.status).toBe(415);
    expect(((await res.json()) as ErrorBody).error.message).toMatch(/content-type must be application\/json/);
  });

  it('a prompt over --max-prompt-bytes gets 400 naming the prompt field, before any tokenizing', async () => {
    const big = 'word '.repeat(MAX_PROMPT_BYTES / 5 + 10);
    const started = performance.now();
    const completions = await post('/v1/completions', { model: 'demo', prompt: big, max_tokens: 1 });
    expect(completions.status).toBe(400);
    const body = (await completions.json()) as ErrorBody;
    expect(body.error.param).toBe('prompt');
    expect(body.error.message).toMatch(/The prompt is 3000050 bytes; this server accepts at most 3000000 bytes/);
    const chat = await post('/v1/chat/completions', { model: 'demo', messages: [{ role: 'user', content: big }] });
    expect(chat.status).toBe(400);
    expect(((await chat.json()) as ErrorBody).error.param).toBe('messages');
    // Refused from its byte count: far quicker than tokenizing 3 MB (seconds).
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it('a long prompt is tokenized off the event loop: /health answers while it is, and the context error names `prompt`', async () => {
    const long = 'The quick brown fox jumps over the lazy dog. '.repeat(Math.floor(2_000_000 / 45));
    let answeredAt = 0;
    const pending = post('/v1/completions', { model: 'demo', prompt: long, max_tokens: 1 }).then(async (r) => {
      answeredAt = performance.now();
      return { status: r.status, body: (await r.json()) as ErrorBody };
    });
    const healthAt: number[] = [];
    while (answeredAt === 0 && healthAt.length < 200) {
      const h = await fetch(`${server.url}/health`);
      if (h.status === 200 && answeredAt === 0) healthAt.push(performance.now());
      await new Promise((r) => setTimeout(r, 20));
    }
    const result = await pending;
    expect(result.status).toBe(400);
    expect(result.body.error.param).toBe('prompt');
    expect(result.body.error.message).toMatch(/maximum context length/);
    // /health was answered several times while the prompt was being tokenized.
    expect(healthAt.filter((t) => t < answeredAt).length).toBeGreaterThan(3);
  });

  it('refuses to bind beyond loopback without an API key unless --insecure, and reports a missing model folder as missing', async () => {
    const exposed = await runCli(['serve', '--model', join(dir.path, 'demo'), '--host', '0.0.0.0', '--port', '0'], { timeoutMs: 60_000 });
    expect(exposed.code).toBe(2);
    expect(exposed.stderr).toMatch(/refusing to expose the HTTP API on 0\.0\.0\.0 without authentication: give --api-key/);
    const missing = await runCli(['serve', '--model', join(dir.path, 'nowhere'), '--port', '0'], { timeoutMs: 60_000 });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nowhere: does not exist/);
    expect(missing.stderr).not.toMatch(/no tokenizer files/);
  });
});
