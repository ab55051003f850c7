import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * A router told to stop (SIGTERM: a rolling upgrade, a pod deleted) drains: it leaves the load balancer
 * (/ready 503), refuses new requests with 503 and Retry-After, finishes the streams it accepted, then exits.
 */
describe('router drain on SIGTERM', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('drain');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 3 });
  });
  afterAll(async () => dir?.remove());

  it('finishes the stream in flight, answers 503 to new requests and on /ready, then exits 0', async () => {
    const serve = await startServeProcess(['--model', `${dir.path}/demo`, '--drain-seconds', '60', '--intra-op-threads', '1']);
    try {
      const model = 'demo';
      const response = await fetch(`${serve.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt: 'go', max_tokens: 200, temperature: 0, ignore_eos: true, stream: true }),
      });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value);
      const exited = new Promise<number | null>((resolve) => serve.process.once('exit', (code) => resolve(code)));
      serve.process.kill('SIGTERM');

      // While the stream runs: out of rotation, and new work is turned away.
      let ready: Response | undefined;
      for (let i = 0; i < 100 && ready?.status !== 503; i++) ready = await fetch(`${serve.url}/ready`);
      expect(ready!.status).toBe(503);
      expect(((await ready!.json()) as { reason: string }).reason).toMatch(/draining/);
      const refused = await fetch(`${serve.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: 'x', max_tokens: 1 }) });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');

      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
      expect(events.at(-1)).toBe('data: [DONE]');
      const tokens = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as { choices: { text: string; finish_reason: string | null }[] });
      expect(tokens.at(-1)!.choices[0]!.finish_reason).toBe('length');
      expect(await exited).toBe(0);
    } finally {
      await serve.stop();
    }
  });
});
