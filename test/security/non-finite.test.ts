import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { modelFingerprint } from '@expertmesh/model-weights';
import { loadModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { encodeTensor } from '@expertmesh/wire';
import { startFakeShard } from '../helpers/fake-shard.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * A shard that answers NaN (faulty hardware, a corrupt file, or a hostile process): the call fails
 * like a failed shard and the client gets an error, never an empty 200.
 */
describe('non-finite shard results', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let fake: Awaited<ReturnType<typeof startFakeShard>>;
  let router: Awaited<ReturnType<typeof startServeProcess>>;

  beforeAll(async () => {
    dir = await tempDir('non-finite');
    const model = join(dir.path, 'demo');
    await makeCheckpoint({ preset: 'demo', outDir: model, seed: 4 });
    const config = await loadModelConfig(model);
    const ck = await SafetensorsCheckpoint.open(model);
    const fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    const H = config.hiddenSize;
    const all = Array.from({ length: config.nRoutedExperts }, (_, e) => e);
    fake = await startFakeShard(
      { shardId: 'nan', modelFingerprint: fingerprint, layers: config.moeLayers.map((layer) => ({ layer, experts: all })), computeDtype: 'float32', weightBytes: 1, residentBytes: 1, hiddenSize: H },
      (req) => {
        const rows = req.hidden!.shape[0]!;
        return { requestId: req.requestId, output: encodeTensor(new Float32Array(rows * H).fill(Number.NaN), rows, H, 'float32'), computeMicros: 1, queueMicros: 0 };
      },
    );
    router = await startServeProcess(['--model', model, '--shard-addresses', fake.address, '--wire-dtype', 'float32', '--step-retry-seconds', '1', '--kv-cache-tokens', '1024']);
  });
  afterAll(async () => {
    await router?.stop();
    await fake?.stop();
    await dir?.remove();
  });

  it('a NaN answer fails the request with an error naming the shard, never a 200 with empty text', async () => {
    const res = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'Hello', max_tokens: 4 }) });
    expect(fake.calls()).toBeGreaterThan(0);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/NonFiniteResultError|non-finite value \(NaN or Inf\)/);
    expect(body.error.message).toContain(fake.address);
  });

  it('streamed, the failure is an error event, and no text chunk carries a token', async () => {
    const res = await fetch(`${router.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, stream: true }),
    });
    const text = await res.text();
    const events = text.split('\n\n').filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]').map((e) => JSON.parse(e.slice(6)) as { error?: { message: string }; choices?: { delta: { content?: string } }[] });
    expect(events.some((e) => e.error && /non-finite value/.test(e.error.message))).toBe(true);
    expect(events.every((e) => !e.choices?.some((c) => c.delta.content))).toBe(true);
  });
});
