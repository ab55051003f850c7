import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { startServeProcess, waitForHealth } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** The router's OpenAI-compatible API, driven by the official `openai` client against a server process. */
describe('OpenAI-compatible API', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof startServeProcess>>;
  let client: OpenAI;
  const model = 'demo';

  beforeAll(async () => {
    dir = await tempDir('api');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 1 });
    server = await startServeProcess(['--model', `${dir.path}/demo`, '--kv-cache-tokens', '16384', '--max-batch-size', '64']);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.stop();
    await dir?.remove();
  });

  it('lists the model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([model]);
  });

  it('completes text, with usage and finish_reason length', async () => {
    const r = await client.completions.create({ model, prompt: 'The capital of France is', max_tokens: 6, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.finish_reason).toBe('length');
    expect(r.usage).toMatchObject({ completion_tokens: 6, total_tokens: r.usage!.prompt_tokens + 6 });
    expect(r.choices[0]!.text.length).toBeGreaterThan(0);
  });

  it('streams completions as SSE chunks whose text adds up to the non-streamed text, usage last', async () => {
    const whole = await client.completions.create({ model, prompt: 'One two three', max_tokens: 8, temperature: 0 });
    const stream = await client.completions.create({ model, prompt: 'One two three', max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.text;
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0]!.text);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: 8 });
  });

  it('chat completions return R1 reasoning as reasoning_content beside content', async () => {
    const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Why is the sky blue?' }], max_tokens: 6, temperature: 0 });
    const message = r.choices[0]!.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string | null };
    expect(r.object).toBe('chat.completion');
    expect(message.role).toBe('assistant');
    // R1's template opens <think>; a random model never closes it, so all of it is reasoning.
    expect(typeof message.reasoning_content).toBe('string');
    expect(message.reasoning_content!.length).toBeGreaterThan(0);
    expect(message.content).toBe('');
  });

  it('streams chat deltas: a role chunk first, then reasoning deltas, then the finish reason', async () => {
    const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0, stream: true });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const reasoning = chunks.map((c) => (c.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '').join('');
    const nonStreamed = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0 });
    expect(reasoning).toBe((nonStreamed.choices[0]!.message as { reasoning_content?: string }).reasoning_content);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
  });

  it('with tools and a forced call, R1 first reasons freely: the reasoning stays reasoning_content', async () => {
    const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const body = { model, messages: [{ role: 'user' as const, content: 'Weather?' }], tools, tool_choice: { type: 'function' as const, function: { name: 'get_weather' } }, max_tokens: 8, temperature: 0 };
    const r = await client.chat.completions.create(body);
    const message = r.choices[0]!.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string | null };
    // The grammar leaves R1's reasoning free until </think>; a random model never closes it.
    expect(message.reasoning_content!.length).toBeGreaterThan(0);
    expect(message.tool_calls).toBeUndefined();
    expect(r.choices[0]!.finish_reason).toBe('length');
    const plain = await client.chat.completions.create({ model, messages: body.messages, max_tokens: 8, temperature: 0 });
    // The tools are described in the prompt, so the prompt is longer than without them.
    expect(r.usage!.prompt_tokens).toBeGreaterThan(plain.usage!.prompt_tokens + 20);
  });

  it('n > 1 returns n choices; with a seed, sampling is reproducible', async () => {
    const ask = () => client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 1, seed: 7, n: 3 });
    const [a, b] = [await ask(), await ask()];
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(a.choices.map((c) => c.text)).toEqual(b.choices.map((c) => c.text));
    expect(new Set(a.choices.map((c) => c.text)).size).toBeGreaterThan(1);
    expect(a.usage!.completion_tokens).toBe(18);
  });

  it('stops at a stop string and leaves it out', async () => {
    const free = await client.completions.create({ model, prompt: 'Count: 1 2 3', max_tokens: 12, temperature: 0 });
    const text = free.choices[0]!.text;
    const stopAt = Math.floor(text.length / 2);
    const stop = text.slice(stopAt, stopAt + 2);
    const stopped = await client.completions.create({ model, prompt: 'Count: 1 2 3', max_tokens: 12, temperature: 0, stop: [stop] });
    expect(stopped.choices[0]!.finish_reason).toBe('stop');
    expect(stopped.choices[0]!.text).toBe(text.slice(0, text.indexOf(stop)));
  });

  it('returns log-probabilities: completions logprobs=k, chat logprobs with top_logprobs', async () => {
    const c = await client.completions.create({ model, prompt: 'Hello', max_tokens: 3, temperature: 0, logprobs: 3 });
    const lp = c.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(3);
    expect(lp.top_logprobs).toHaveLength(3);
    for (const [i, top] of lp.top_logprobs!.entries()) {
      const values = Object.values(top);
      expect(values.length).toBeLessThanOrEqual(3);
      // Greedy: the chosen token is the most likely one.
      expect(lp.token_logprobs![i]).toBeCloseTo(Math.max(...values), 6);
      expect(Math.max(...values)).toBeLessThanOrEqual(0);
    }
    const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = chat.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(2);
    expect(content[0]!.top_logprobs).toHaveLength(2);
    expect(content[0]!.logprob).toBeCloseTo(content[0]!.top_logprobs[0]!.logprob, 6);
  });

  it('32 concurrent streams of different lengths each get exactly the tokens they get alone (greedy)', async () => {
    const prompts = Array.from({ length: 32 }, (_, i) => `Request ${i}: ${'lorem ipsum '.repeat(1 + (i % 7))}`);
    const lengths = prompts.map((_, i) => 4 + ((i * 5) % 13));
    const collect = async (i: number): Promise<string> => {
      const stream = await client.completions.create({ model, prompt: prompts[i]!, max_tokens: lengths[i]!, temperature: 0, stream: true, logprobs: 0 });
      let tokens = '';
      for await (const chunk of stream) for (const c of chunk.choices) tokens += (c.logprobs?.tokens ?? []).join('\u0001') + '\u0002';
      return tokens;
    };
    const alone: string[] = [];
    for (let i = 0; i < 32; i++) alone.push(await collect(i));
    const together = await Promise.all(prompts.map((_, i) => collect(i)));
    const clean = (s: string): string => s.replaceAll('\u0002', '');
    expect(together.map(clean)).toEqual(alone.map(clean));
    expect(alone.every((s) => clean(s).length > 0)).toBe(true);
  });

  it('a client that disconnects mid-stream frees its slot at once', async () => {
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model, prompt: 'a long story', max_tokens: 4000, temperature: 0, stream: true, ignore_eos: true } as OpenAI.CompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) {
        if (++chunks === 3) {
          expect((await waitForHealth(server.url, () => true)).running).toBe(1);
          controller.abort();
          break;
        }
      }
    } catch {
      // The client may surface the abort as an error; either way the connection is gone.
    }
    expect(chunks).toBe(3);
    expect((await waitForHealth(server.url, (h) => h.running === 0)).running).toBe(0);
  });

  describe('errors in OpenAI shape', () => {
    const post = async (path: string, body: string): Promise<{ status: number; body: { error: { message: string; type: string; param: string | null } } }> => {
      const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: res.status, body: (await res.json()) as { error: { message: string; type: string; param: string | null } } };
    };

    it('malformed JSON → 400', async () => {
      const r = await post('/v1/completions', '{"model": ');
      expect(r.status).toBe(400);
      expect(r.body.error.type).toBe('invalid_request_error');
      expect(r.body.error.message).toMatch(/not valid JSON/);
    });

    it('unknown model → 404', async () => {
      const r = await post('/v1/chat/completions', JSON.stringify({ model: 'gpt-9', messages: [{ role: 'user', content: 'x' }] }));
      expect(r.status).toBe(404);
      expect(r.body.error.message).toMatch(/gpt-9.*does not exist/);
    });

    it('a prompt longer than the context → 400 naming the lengths', async () => {
      const r = await post('/v1/completions', JSON.stringify({ model, prompt: Array.from({ length: 16380 }, () => 5), max_tokens: 10 }));
      expect(r.status).toBe(400);
      expect(r.body.error.message).toMatch(/maximum context length is 16384 tokens.*16390 tokens \(16380 in the prompt, 10 for the completion\)/);
    });

    it('bad parameter values → 400 naming the parameter', async () => {
      for (const [body, param] of [
        [{ model, prompt: 'x', temperature: 5 }, 'temperature'],
        [{ model, prompt: 'x', max_tokens: -1 }, 'max_tokens'],
        [{ model, prompt: 'x', n: 0 }, 'n'],
        [{ model, prompt: 'x', top_p: 0 }, 'top_p'],
        [{ model }, 'prompt'],
      ] as const) {
        const r = await post('/v1/completions', JSON.stringify(body));
        expect(r.status).toBe(400);
        expect(r.body.error.param).toBe(param);
      }
      const chat = await post('/v1/chat/completions', JSON.stringify({ model, messages: [] }));
      expect(chat.status).toBe(400);
      expect(chat.body.error.param).toBe('messages');
    });

    it('an unknown route → 404, and the server is still healthy after all of it', async () => {
      const r = await fetch(`${server.url}/v2/nothing`);
      expect(r.status).toBe(404);
      expect(((await r.json()) as { error: object }).error).toBeDefined();
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
      expect((await fetch(`${server.url}/ready`)).status).toBe(200);
    });
  });
});
