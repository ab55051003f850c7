import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { LocalCluster } from '@expertmesh/local-cluster';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** Reads one sample (sum over label sets matching `labels`) from Prometheus text. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const l = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

function promtool(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('Prometheus metrics', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cluster: LocalCluster;
  let router: Awaited<ReturnType<typeof startServeProcess>>;
  beforeAll(async () => {
    dir = await tempDir('metrics');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 5 });
    cluster = await LocalCluster.start({ modelDir: `${dir.path}/demo`, shards: 2, nRoutedExperts: 64, shardArgs: ['--intra-op-threads', '1'] });
    router = await startServeProcess(['--model', `${dir.path}/demo`, '--shard-addresses', cluster.addresses.join(',')]);
  });
  afterAll(async () => {
    await router?.stop();
    await cluster?.stop();
    await dir?.remove();
  });

  const scrape = async (url: string): Promise<string> => (await fetch(url)).text();

  it('router counters and histograms move with traffic', async () => {
    const before = await scrape(`${router.url}/metrics`);
    const ok = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'count me', max_tokens: 4, ignore_eos: true }) });
    expect(ok.status).toBe(200);
    const usage = ((await ok.json()) as { usage: { prompt_tokens: number } }).usage;
    const bad = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model": "demo"' });
    expect(bad.status).toBe(400);
    const after = await scrape(`${router.url}/metrics`);
    const delta = (name: string, labels: Record<string, string> = {}): number => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('expertmesh_requests_total', { endpoint: '/v1/completions', outcome: 'ok' })).toBe(1);
    expect(delta('expertmesh_requests_total', { endpoint: '/v1/completions', outcome: 'client_error' })).toBe(1);
    expect(delta('expertmesh_generation_tokens_total')).toBe(4);
    expect(delta('expertmesh_time_to_first_token_seconds_count')).toBe(1);
    expect(delta('expertmesh_time_per_output_token_seconds_count')).toBe(1);
    expect(delta('expertmesh_request_duration_seconds_count', { endpoint: '/v1/completions' })).toBe(2);
    // Every token through the model (the prompt, then 3 decoded: the 4th output token is never fed
    // back) chooses 8 experts in each of the 3 MoE layers.
    expect(delta('expertmesh_expert_tokens_total')).toBe(3 * 8 * (usage.prompt_tokens + 3));
    expect(delta('expertmesh_shard_call_duration_seconds_count')).toBeGreaterThan(0);
    expect(delta('expertmesh_dispatch_bytes_total', { direction: 'sent' })).toBeGreaterThan(0);
    expect(sample(after, 'expertmesh_kv_cache_usage_ratio')).toBe(0);
    expect(sample(after, 'expertmesh_queue_length')).toBe(0);
  });

  it('shard counters move with traffic', async () => {
    const before = await Promise.all(cluster.shards.map((s) => scrape(s.metricsUrl)));
    await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'shard work', max_tokens: 3 }) });
    const after = await Promise.all(cluster.shards.map((s) => scrape(s.metricsUrl)));
    const delta = (name: string, labels: Record<string, string> = {}): number => after.reduce((a, t, i) => a + sample(t, name, labels) - sample(before[i]!, name, labels), 0);
    expect(delta('expertmesh_shard_requests_total', { outcome: 'ok' })).toBeGreaterThan(0);
    expect(delta('expertmesh_shard_compute_seconds_count')).toBe(delta('expertmesh_shard_requests_total', { outcome: 'ok' }));
    expect(delta('expertmesh_shard_received_bytes_total')).toBeGreaterThan(0);
    expect(delta('expertmesh_shard_sent_bytes_total')).toBeGreaterThan(0);
    expect(delta('expertmesh_shard_expert_tokens_total') % 8).toBe(0);
  });

  it('promtool check metrics accepts the router and every shard', async () => {
    for (const url of [`${router.url}/metrics`, ...cluster.shards.map((s) => s.metricsUrl)]) {
      const r = promtool(await scrape(url));
      expect(r.output).toBe('');
      expect(r.status).toBe(0);
    }
  });
});
