import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { withServingNodeFlags } from '@expertmesh/process-lifecycle';
import { serverSentEvents } from '../test/helpers/completion-stream.js';

/** `expertmesh serve …` as a process on a free loopback port, for benchmarks (`nodeArgs`: Node/V8 flags for it alone). */
export async function startBenchServer(args: readonly string[], nodeArgs: readonly string[] = []): Promise<{ url: string; stop: () => Promise<void>; process: ChildProcess }> {
  const cli = join(import.meta.dirname, '..', 'packages', 'cli', 'bin', 'expertmesh.mjs');
  const server = spawn(process.execPath, withServingNodeFlags([...nodeArgs, cli, 'serve', '--port', '0', ...args]), { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    createInterface({ input: server.stdout! }).on('line', (l) => {
      const m = JSON.parse(l) as { event?: string; url?: string };
      if (m.event === 'listening') resolve(m.url!);
    });
  });
  const stop = async (): Promise<void> => {
    if (server.exitCode !== null) return;
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  };
  return { url, stop, process: server };
}

export interface StreamTiming {
  readonly ttftMs: number;
  readonly latencyMs: number;
  readonly outputTokens: number;
  readonly cachedTokens: number;
  readonly promptTokens: number;
  /** performance.now() of every chunk that carried tokens, one entry per token (the body asks for logprobs). */
  readonly tokenTimes: readonly number[];
  /** The tokens, as the log-probabilities name them. */
  readonly tokens: readonly string[];
}

/** POSTs a streaming request (with usage; the body should ask for logprobs) and times its first and last token. */
export async function timedStream(url: string, path: '/v1/completions' | '/v1/chat/completions', body: Record<string, unknown>): Promise<StreamTiming> {
  const start = performance.now();
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`${res.status}: ${await res.text()}`);
  let first = 0;
  let last = 0;
  let usage = { completion_tokens: 0, prompt_tokens: 0, prompt_tokens_details: { cached_tokens: 0 } };
  const tokenTimes: number[] = [];
  const tokens: string[] = [];
  for await (const event of serverSentEvents(res.body!)) {
    if (event === '[DONE]') continue;
    const data = JSON.parse(event) as { choices: { text?: string; delta?: { content?: string; reasoning_content?: string }; logprobs?: { tokens?: string[] } | null }[]; usage?: typeof usage };
    const now = performance.now();
    if (data.usage) usage = data.usage;
    // A chunk carries tokens when it has log-probabilities (ask for them: text may lag a token
    // behind while a multi-byte character is incomplete).
    else if (data.choices.some((c) => c.logprobs)) {
      first ||= now;
      last = now;
      for (const t of data.choices.flatMap((c) => c.logprobs?.tokens ?? [])) {
        tokens.push(t);
        tokenTimes.push(now);
      }
    }
  }
  return { ttftMs: first - start, latencyMs: last - start, outputTokens: usage.completion_tokens, cachedTokens: usage.prompt_tokens_details.cached_tokens, promptTokens: usage.prompt_tokens, tokenTimes, tokens };
}

export const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
