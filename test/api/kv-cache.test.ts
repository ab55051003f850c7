import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

type Server = Awaited<ReturnType<typeof startServeProcess>>;

/** A greedy completion's tokens and top log-probabilities, and how much of its prompt was cached. */
interface Run {
  readonly tokens: string[];
  readonly top: Record<string, number>[];
  readonly cached: number;
}

async function complete(client: OpenAI, prompt: number[] | string, maxTokens: number): Promise<Run> {
  const r = await client.completions.create({ model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, logprobs: 5, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const lp = r.choices[0]!.logprobs!;
  return { tokens: lp.tokens!, top: lp.top_logprobs!, cached: (r.usage as { prompt_tokens_details?: { cached_tokens?: number } }).prompt_tokens_details?.cached_tokens ?? -1 };
}

/** Same greedy tokens, and the same top log-probabilities up to float32 rounding of differently batched matmuls. */
function expectSameRun(actual: Run, expected: Run): void {
  expect(actual.tokens).toEqual(expected.tokens);
  actual.top.forEach((top, i) => {
    expect(Object.keys(top)).toEqual(Object.keys(expected.top[i]!));
    for (const [token, lp] of Object.entries(top)) expect(Math.abs(lp - expected.top[i]![token]!)).toBeLessThan(1e-4);
  });
}

async function metric(server: Server, name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

const range = (n: number, from: number): number[] => Array.from({ length: n }, (_, i) => from + ((i * 7919) % 5000));

/**
 * Prefix caching and KV blocks on demand, through the real server and the openai client. The
 * reference is a server with prefix caching off and room for everything; the servers under test
 * share prefixes, and one has a cache far too small for its requests at once.
 */
describe('KV cache: prefix caching and blocks on demand', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let reference: Server;
  let cached: Server;
  let small: Server;
  let ref: OpenAI;
  let hot: OpenAI;
  let tight: OpenAI;

  beforeAll(async () => {
    dir = await tempDir('kv');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 3 });
    const model = ['--model', `${dir.path}/demo`];
    [reference, cached, small] = await Promise.all([
      startServeProcess([...model, '--kv-cache-tokens', '16384', '--no-prefix-caching']),
      startServeProcess([...model, '--kv-cache-tokens', '16384']),
      // 24 blocks of 16 tokens: 6 requests of up to 96 tokens need 36 at once.
      startServeProcess([...model, '--kv-cache-tokens', '384', '--max-model-len', '384']),
    ]);
    const client = (s: Server): OpenAI => new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    [ref, hot, tight] = [client(reference), client(cached), client(small)];
  });
  afterAll(async () => {
    await Promise.all([reference?.stop(), cached?.stop(), small?.stop()]);
    await dir?.remove();
  });

  it('requests sharing a long system prompt reuse its blocks and answer exactly as without the cache', async () => {
    const system = `You are a meticulous assistant. ${'Answer carefully, cite sources, and keep it short. '.repeat(12)}`;
    const questions = ['Why is the sky blue?', 'What is 2+2?', 'Name a prime.', 'Who wrote Hamlet?', 'Define entropy.', 'Say hi.'];
    const ask = async (client: OpenAI, q: string): Promise<{ tokens: string[]; top: number[][]; cached: number; prompt: number }> => {
      const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'system', content: system }, { role: 'user', content: q }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
      const content = r.choices[0]!.logprobs!.content!;
      const usage = r.usage as OpenAI.CompletionUsage & { prompt_tokens_details: { cached_tokens: number } };
      return { tokens: content.map((c) => c.token), top: content.map((c) => c.top_logprobs.map((t) => t.logprob)), cached: usage.prompt_tokens_details.cached_tokens, prompt: usage.prompt_tokens };
    };
    const first = await ask(hot, questions[0]!);
    expect(first.cached).toBe(0);
    const rest = await Promise.all(questions.slice(1).map((q) => ask(hot, q)));
    const expected = await Promise.all(questions.map((q) => ask(ref, q)));
    for (const [i, got] of [first, ...rest].entries()) {
      expect(got.tokens).toEqual(expected[i]!.tokens);
      got.top.forEach((row, t) => row.forEach((lp, k) => expect(Math.abs(lp - expected[i]!.top[t]![k]!)).toBeLessThan(1e-4)));
      expect(expected[i]!.cached).toBe(0);
    }
    // Every later request found the system prompt's full blocks (≥ 200 tokens) in the cache.
    for (const r of rest) expect(r.cached).toBeGreaterThanOrEqual(Math.floor((first.prompt - 16) / 16) * 16 - 16);
    // Metrics: these are the server's first requests, so its counters are exactly theirs.
    expect(await metric(cached, 'expertmesh_prefix_cache_hits_tokens_total')).toBe(rest.reduce((n, r) => n + r.cached, 0));
    expect(await metric(cached, 'expertmesh_prefix_cache_queries_tokens_total')).toBe(first.prompt + rest.reduce((n, r) => n + r.prompt, 0));
    expect(await metric(cached, 'expertmesh_prefix_cache_hit_rate')).toBeGreaterThan(0.5);
  });

  it('a prompt that diverges mid-block shares only the blocks before it', async () => {
    const base = range(70, 10);
    const diverged = [...base.slice(0, 37), ...range(20, 3000)]; // differs from position 37, inside block 2 (32-47)
    await complete(hot, base, 4);
    const got = await complete(hot, diverged, 8);
    expect(got.cached).toBe(32);
    expectSameRun(got, await complete(ref, diverged, 8));
    // The same prompt again: every full block but the last (which must be computed for its logits).
    const again = await complete(hot, base, 4);
    expect(again.cached).toBe(64);
    expectSameRun(again, await complete(ref, base, 4));
  });

  it('under eviction pressure (a cache too small to keep everything) answers stay exact', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => range(60, 100 + i * 300));
    const expected = await Promise.all(prompts.map((p) => complete(ref, p, 10)));
    // Twice through 8 prompts of 60 tokens on a 384-token cache: the second pass finds some blocks
    // and recomputes the evicted ones.
    for (let pass = 0; pass < 2; pass++) {
      for (const [i, p] of prompts.entries()) expectSameRun(await complete(tight, p, 10), expected[i]!);
    }
    expect(await metric(small, 'expertmesh_prefix_cache_evicted_blocks_total')).toBeGreaterThan(0);
    // A prompt asked twice in a row is found even on the small cache.
    const last = prompts.at(-1)!;
    expect((await complete(tight, last, 2)).cached).toBe(48);
  });

  it('a cache too small for all requests at once still serves them all, streamed, nothing repeated or lost', async () => {
    const prompts = Array.from({ length: 6 }, (_, i) => range(24, 2000 + i * 111));
    const expected = await Promise.all(prompts.map((p) => complete(ref, p, 72)));
    const preemptionsBefore = await metric(small, 'expertmesh_preemptions_total');
    const stream = async (prompt: number[]): Promise<string[]> => {
      const s = await tight.completions.create({ model: 'demo', prompt, max_tokens: 72, temperature: 0, logprobs: 0, stream: true, ignore_eos: true } as OpenAI.CompletionCreateParamsStreaming);
      const tokens: string[] = [];
      for await (const chunk of s) for (const c of chunk.choices) tokens.push(...(c.logprobs?.tokens ?? []));
      return tokens;
    };
    const streamed = await Promise.all(prompts.map(stream));
    // 6 × 96 tokens on 24 blocks of 16: sequences were preempted and recomputed.
    expect(await metric(small, 'expertmesh_preemptions_total')).toBeGreaterThan(preemptionsBefore);
    streamed.forEach((tokens, i) => {
      expect(tokens).toHaveLength(72);
      expect(tokens).toEqual(expected[i]!.tokens);
    });
    expect((await (await fetch(`${small.url}/health`)).json()) as object).toMatchObject({ running: 0, waiting: 0 });
  });
});
