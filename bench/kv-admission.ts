/**
 * KV cache on demand (with preemption) against the old reservation of prompt + max_tokens, at the
 * same --kv-cache-tokens, on the demo model: a burst of requests whose answers end (at an
 * end-of-sequence token) long before max_tokens, as chat answers do. Reports how many sequences
 * ran at once, output throughput, TTFT and preemptions.
 *   node --import tsx bench/kv-admission.ts [--model DIR] [--requests 48] [--kv-cache-tokens 4096]
 *       [--prompt 96] [--max-tokens 512] [--eos-bias 9] [--out FILE]
 * The answers' lengths come from sampling (temperature 1, a seed per request) with a logit bias on
 * the end-of-sequence token: the same requests get the same answers in both runs.
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { SeededRandom } from '@expertmesh/engine';
import { percentile, startBenchServer, timedStream } from './bench-server.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    requests: { type: 'string', default: '48' },
    'kv-cache-tokens': { type: 'string', default: '4096' },
    prompt: { type: 'string', default: '96' },
    'max-tokens': { type: 'string', default: '512' },
    'eos-bias': { type: 'string', default: '9' },
    out: { type: 'string' },
  },
});
const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo');
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });
const n = Number(values.requests);
const kvTokens = values['kv-cache-tokens']!;
const promptTokens = Number(values.prompt);
const maxTokens = Number(values['max-tokens']);
const random = new SeededRandom(5);
const prompts = Array.from({ length: n }, () => Array.from({ length: promptTokens }, () => 100 + Math.floor(random.next() * 120000)));

async function metric(url: string, name: string): Promise<number> {
  const line = (await (await fetch(`${url}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

const rows = [];
for (const admission of ['reserve', 'on-demand'] as const) {
  const server = await startBenchServer(['--model', modelDir, '--kv-cache-tokens', kvTokens, '--kv-admission', admission, '--max-waiting', '100000', '--no-prefix-caching']);
  try {
    const running: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        running.push(((await (await fetch(`${server.url}/health`)).json()) as { running: number }).running);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const t0 = performance.now();
    const results = await Promise.all(
      prompts.map((prompt, i) =>
        timedStream(server.url, '/v1/completions', { model: 'demo', prompt, max_tokens: maxTokens, temperature: 1, seed: i, logit_bias: { '1': Number(values['eos-bias']) }, logprobs: 0 }),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    sampling = false;
    await sampler;
    const outputTokens = results.reduce((a, r) => a + r.outputTokens, 0);
    const busy = running.filter((r) => r > 0);
    rows.push({
      admission,
      seconds,
      outputTokens,
      meanOutputTokens: outputTokens / n,
      outputTokensPerSecond: outputTokens / seconds,
      runningMean: busy.reduce((a, r) => a + r, 0) / Math.max(1, busy.length),
      runningMax: Math.max(...running),
      ttftMs: { p50: percentile(results.map((r) => r.ttftMs), 50), p99: percentile(results.map((r) => r.ttftMs), 99) },
      latencyMs: { p50: percentile(results.map((r) => r.latencyMs), 50), p99: percentile(results.map((r) => r.latencyMs), 99) },
      preemptions: await metric(server.url, 'expertmesh_preemptions_total'),
    });
    console.error(rows.at(-1));
  } finally {
    await server.stop();
  }
}
const report = { date: new Date().toISOString(), model: 'demo preset, experts in process', requests: n, kvCacheTokens: Number(kvTokens), promptTokens, maxTokens, eosBias: Number(values['eos-bias']), rows };
const out = values.out ?? join('bench', 'results', `kv-admission-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| KV admission | running at once (mean / max) | output tok/s | wall s | TTFT p50 / p99 ms | latency p50 / p99 s | preemptions |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.admission} | ${r.runningMean.toFixed(1)} / ${r.runningMax} | ${r.outputTokensPerSecond.toFixed(1)} | ${r.seconds.toFixed(1)} | ${r.ttftMs.p50.toFixed(0)} / ${r.ttftMs.p99.toFixed(0)} | ${(r.latencyMs.p50 / 1000).toFixed(1)} / ${(r.latencyMs.p99 / 1000).toFixed(1)} | ${r.preemptions} |`,
  );
}
