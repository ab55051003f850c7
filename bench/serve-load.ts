/**
 * Open-loop load against a local cluster (a `serve` process over N shard processes on loopback):
 * requests arrive as a Poisson process at --rate per second, --requests in all, prompt and output
 * lengths drawn uniformly from the given ranges; reports throughput, time to first token (TTFT) and
 * time per output token (TPOT) at p50/p99.
 *   node --import tsx bench/serve-load.ts [--model DIR] [--shards 2] [--rate 4] [--requests 64]
 *       [--prompt 32-256] [--output 16-128] [--seed 1]
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

const server = await startBenchServer(['--model', modelDir, '--shards', values.shards!, '--max-waiting', '100000']);
const url = server.url;

interface Result {
  readonly ttftMs: number;
  readonly tpotMs: number;
  readonly latencyMs: number;
  readonly outputTokens: number;
}

async function one(promptTokens: number, outputTokens: number): Promise<Result> {
  const prompt = Array.from({ length: promptTokens }, () => uniform(100, 120000));
  const t = await timedStream(url, '/v1/completions', { model: 'demo', prompt, max_tokens: outputTokens, temperature: 0, ignore_eos: true, logprobs: 0 });
  return { ttftMs: t.ttftMs, tpotMs: t.outputTokens > 1 ? (t.latencyMs - t.ttftMs) / (t.outputTokens - 1) : 0, latencyMs: t.latencyMs, outputTokens: t.outputTokens };
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
await server.stop();
const pct = percentile;
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
