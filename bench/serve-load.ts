/**
 * Open-loop load against a local cluster (a `serve` process over N shard processes on loopback):
 * requests arrive as a Poisson process at --rate per second, --requests in all, prompt and output
 * lengths drawn uniformly from the given ranges; reports throughput, time to first token (TTFT) and
 * time per output token (TPOT) at p50/p99.
 *   node --import tsx bench/serve-load.ts [--model DIR] [--shards 2] [--rate 4] [--requests 64]
 *       [--prompt 32-256] [--output 16-128] [--seed 1]
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { SeededRandom } from '@expertmesh/engine';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    shards: { type: 'string', default: '2' },
    rate: { type: 'string', default: '4' },
    requests: { type: 'string', default: '64' },
    prompt: { type: 'string', default: '32-256' },
    output: { type: 'string', default: '16-128' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string' },
  },
});
const range = (s: string): [number, number] => s.split('-').map(Number) as [number, number];
const [pLo, pHi] = range(values.prompt!);
const [oLo, oHi] = range(values.output!);
const rate = Number(values.rate);
const total = Number(values.requests);
const random = new SeededRandom(Number(values.seed));
const uniform = (lo: number, hi: number): number => lo + Math.floor(random.next() * (hi - lo + 1));

const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo');
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });

const cli = join(import.meta.dirname, '..', 'packages', 'cli', 'bin', 'expertmesh.mjs');
const server = spawn(process.execPath, [cli, 'serve', '--model', modelDir, '--port', '0', '--shards', values.shards!, '--max-waiting', '100000'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise<string>((resolve) =>
  createInterface({ input: server.stdout! }).on('line', (l) => {
    const m = JSON.parse(l) as { event?: string; url?: string };
    if (m.event === 'listening') resolve(m.url!);
  }),
);

interface Result {
  readonly ttftMs: number;
  readonly tpotMs: number;
  readonly latencyMs: number;
  readonly outputTokens: number;
}

async function one(promptTokens: number, outputTokens: number): Promise<Result> {
  const prompt = Array.from({ length: promptTokens }, () => uniform(100, 120000));
  const start = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', prompt, max_tokens: outputTokens, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
  });
  let first = 0;
  let last = 0;
  let tokens = 0;
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let at: number;
    while ((at = buffered.indexOf('\n\n')) >= 0) {
      const event = buffered.slice(0, at);
      buffered = buffered.slice(at + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const body = JSON.parse(event.slice(6)) as { choices: unknown[]; usage?: { completion_tokens: number } };
      const now = performance.now();
      if (body.usage) tokens = body.usage.completion_tokens;
      else if (body.choices.length) {
        first ||= now;
        last = now;
      }
    }
  }
  return { ttftMs: first - start, tpotMs: tokens > 1 ? (last - first) / (tokens - 1) : 0, latencyMs: last - start, outputTokens: tokens };
}

const pending: Promise<Result>[] = [];
const t0 = performance.now();
let at = 0;
for (let i = 0; i < total; i++) {
  at += -Math.log(1 - random.next()) / rate; // exponential inter-arrival times
  const wait = t0 + at * 1000 - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  pending.push(one(uniform(pLo, pHi), uniform(oLo, oHi)));
}
const results = await Promise.all(pending);
const elapsed = (performance.now() - t0) / 1000;
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const outTokens = results.reduce((a, r) => a + r.outputTokens, 0);
const summary = {
  date: new Date().toISOString(),
  shards: Number(values.shards),
  rate,
  requests: total,
  promptTokens: values.prompt,
  outputTokens: values.output,
  seconds: elapsed,
  requestsPerSecond: total / elapsed,
  outputTokensPerSecond: outTokens / elapsed,
  ttftMs: { p50: pct(results.map((r) => r.ttftMs), 50), p99: pct(results.map((r) => r.ttftMs), 99) },
  tpotMs: { p50: pct(results.map((r) => r.tpotMs), 50), p99: pct(results.map((r) => r.tpotMs), 99) },
  latencyMs: { p50: pct(results.map((r) => r.latencyMs), 50), p99: pct(results.map((r) => r.latencyMs), 99) },
};
const out = values.out ?? join('bench', 'results', `serve-load-${summary.date.slice(0, 10)}-rate${rate}-shards${values.shards}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(summary, null, 2)}\n`);
console.log(JSON.stringify(summary));
