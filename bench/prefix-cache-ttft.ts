/**
 * Time to first token for chat requests that share a 1,000-token system prompt, with prefix caching
 * on and off, on the demo model (one router process, experts in process). Requests go one at a time
 * after a warm-up, so TTFT is the prompt's own cost.
 *   node --import tsx bench/prefix-cache-ttft.ts [--model DIR] [--requests 8] [--out FILE]
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Tokenizer } from '@expertmesh/tokenizer';
import { percentile, startBenchServer, timedStream } from './bench-server.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, requests: { type: 'string', default: '8' }, out: { type: 'string' } } });
const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo');
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });
const tokenizer = (await Tokenizer.load(modelDir))!;
const SYSTEM_TOKENS = 1000;
const filler = 'You are the support assistant of a company that sells gardening tools. Be precise, polite and brief. Policies: refunds within 30 days; shipping takes 2 to 5 days; warranty covers defects for two years. ';
const system = tokenizer.decode(tokenizer.encode(filler.repeat(40), { addBos: false }).slice(0, SYSTEM_TOKENS));
const questions = ['Where is my order?', 'Can I return a rake?', 'Do you ship to Norway?', 'Is the hose under warranty?', 'What is your phone number?', 'How do I sharpen shears?', 'Do you sell seeds?', 'Can I change my address?', 'Is there a discount?', 'What are your hours?'];
const n = Number(values.requests);

const rows = [];
for (const caching of [false, true]) {
  const server = await startBenchServer(['--model', modelDir, '--kv-cache-tokens', '16384', ...(caching ? [] : ['--no-prefix-caching'])]);
  try {
    const ask = (q: string) => timedStream(server.url, '/v1/chat/completions', { model: 'demo', messages: [{ role: 'system', content: system }, { role: 'user', content: q }], max_tokens: 4, temperature: 0, logprobs: true });
    const warm = await ask('Hello');
    const runs = [];
    for (let i = 0; i < n; i++) runs.push(await ask(questions[i % questions.length]!));
    rows.push({
      prefixCaching: caching,
      promptTokens: warm.promptTokens,
      warmupTtftMs: warm.ttftMs,
      ttftMs: { p50: percentile(runs.map((r) => r.ttftMs), 50), min: Math.min(...runs.map((r) => r.ttftMs)), max: Math.max(...runs.map((r) => r.ttftMs)) },
      cachedTokens: { p50: percentile(runs.map((r) => r.cachedTokens), 50) },
    });
    console.error(rows.at(-1));
  } finally {
    await server.stop();
  }
}
const [off, on] = rows;
const report = { date: new Date().toISOString(), model: 'demo preset, experts in process', systemPromptTokens: SYSTEM_TOKENS, requests: n, rows, speedup: off!.ttftMs.p50 / on!.ttftMs.p50 };
const out = values.out ?? join('bench', 'results', `prefix-cache-ttft-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| prefix caching | prompt tokens | cached tokens (p50) | TTFT p50 ms | TTFT min–max ms |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.prefixCaching ? 'on' : 'off'} | ${r.promptTokens} | ${r.cachedTokens.p50} | ${r.ttftMs.p50.toFixed(0)} | ${r.ttftMs.min.toFixed(0)}–${r.ttftMs.max.toFixed(0)} |`);
console.log(`\nTTFT ${report.speedup.toFixed(1)}× lower with the cache.`);
