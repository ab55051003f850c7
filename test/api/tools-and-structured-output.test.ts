import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Tokenizer } from '@expertmesh/tokenizer';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const WEATHER_PARAMS = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 10 }, unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
  required: ['city', 'unit', 'days'],
  additionalProperties: false,
};
const TOOLS: OpenAI.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather in a city', parameters: WEATHER_PARAMS } },
  { type: 'function', function: { name: 'get_time', description: 'Time in a zone', parameters: { type: 'object', properties: { zone: { enum: ['UTC', 'CET'] } }, required: ['zone'], additionalProperties: false } } },
];

function expectWeatherArguments(json: string): void {
  const args = JSON.parse(json) as { city: unknown; unit: unknown; days: unknown };
  expect(Object.keys(args).sort()).toEqual(['city', 'days', 'unit']);
  expect(typeof args.city === 'string' && args.city.length <= 10).toBe(true);
  expect(['celsius', 'fahrenheit']).toContain(args.unit);
  expect(Number.isInteger(args.days) && (args.days as number) >= 1 && (args.days as number) <= 7).toBe(true);
}

/**
 * Tools, structured output and strict request checking through the real server and the official
 * `openai` client. The checkpoint uses DeepSeek-V3's chat template (no reasoning block), so a forced
 * call starts at the first generated token; random weights would never call a tool on their own.
 */
describe('tool calls and structured output (DeepSeek-V3 template)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Awaited<ReturnType<typeof startServeProcess>>;
  let client: OpenAI;
  let tokenizer: Tokenizer;
  const model = 'demo-v3';
  const ask = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];

  beforeAll(async () => {
    dir = await tempDir('tools');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/${model}`, seed: 1, chatTemplate: 'deepseek-v3' });
    tokenizer = (await Tokenizer.load(`${dir.path}/${model}`))!;
    server = await startServeProcess(['--model', `${dir.path}/${model}`, '--kv-cache-tokens', '16384']);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.stop();
    await dir?.remove();
  });

  it('a named tool_choice returns one call of that function with schema-valid arguments, finish_reason tool_calls', async () => {
    const r = await client.chat.completions.create({ model, messages: ask, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 200, temperature: 0 });
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toHaveLength(1);
    const call = choice.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(call.type).toBe('function');
    expect(call.id).toMatch(/^call_/);
    expect(call.function.name).toBe('get_weather');
    expectWeatherArguments(call.function.arguments);
  });

  it('streams delta.tool_calls that the openai client assembles into the same call', async () => {
    const body = { model, messages: ask, tools: TOOLS, tool_choice: { type: 'function' as const, function: { name: 'get_weather' } }, max_tokens: 200, temperature: 0 };
    const whole = await client.chat.completions.create(body);
    const stream = client.chat.completions.stream(body);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    stream.on('chunk', (c) => chunks.push(c));
    const assembled = await stream.finalChatCompletion();
    const streamedCall = assembled.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    const wholeCall = whole.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(streamedCall.function).toEqual(wholeCall.function);
    expect(assembled.choices[0]!.finish_reason).toBe('tool_calls');
    // The name comes once, with the id; the arguments arrive in more than one piece.
    const pieces = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(pieces.filter((p) => p.id !== undefined)).toHaveLength(1);
    expect(pieces.filter((p) => p.function?.arguments).length).toBeGreaterThan(1);
  });

  it('tool_choice required without parallel calls gives exactly one call of an offered function', async () => {
    const r = await client.chat.completions.create({ model, messages: ask, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200, temperature: 0 });
    expect(r.choices[0]!.finish_reason).toBe('tool_calls');
    const calls = r.choices[0]!.message.tool_calls! as OpenAI.ChatCompletionMessageFunctionToolCall[];
    expect(calls).toHaveLength(1);
    expect(['get_weather', 'get_time']).toContain(calls[0]!.function.name);
    expect(() => JSON.parse(calls[0]!.function.arguments) as unknown).not.toThrow();
  });

  it('strict tools with tool_choice auto: a call the model opens is held to the schema', async () => {
    // Random weights never open a call by themselves: logit_bias makes the first token the call block's opening.
    const strictTools = TOOLS.map((t) => ({ ...t, function: { ...(t as OpenAI.ChatCompletionFunctionTool).function, strict: true } }));
    const r = await client.chat.completions.create({ model, messages: ask, tools: strictTools, parallel_tool_calls: false, max_tokens: 200, temperature: 0, logit_bias: { '128806': 100 } });
    expect(r.choices[0]!.finish_reason).toBe('tool_calls');
    const calls = r.choices[0]!.message.tool_calls! as OpenAI.ChatCompletionMessageFunctionToolCall[];
    expect(calls).toHaveLength(1);
    if (calls[0]!.function.name === 'get_weather') expectWeatherArguments(calls[0]!.function.arguments);
    else expect(JSON.parse(calls[0]!.function.arguments)).toHaveProperty('zone');
  });

  it('renders earlier calls and role "tool" results through the chat template', async () => {
    const history: OpenAI.ChatCompletionMessageParam[] = [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '18 degrees' },
    ];
    const r = await client.chat.completions.create({ model, messages: history, max_tokens: 2, temperature: 0 });
    // DeepSeek's layout, rendered by the checkpoint's template (no tools offered, so no tool prompt).
    const expected =
      '<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n' +
      '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>' +
      '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18 degrees<｜tool▁output▁end｜><｜tool▁outputs▁end｜>';
    expect(r.usage!.prompt_tokens).toBe(tokenizer.encode(expected, { addBos: false }).length);
  });

  it('response_format json_schema: the answer parses and validates', async () => {
    const r = await client.chat.completions.create({
      model,
      messages: ask,
      response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: WEATHER_PARAMS, strict: true } },
      max_tokens: 100,
      temperature: 0,
    });
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expectWeatherArguments(r.choices[0]!.message.content!);
  });

  it('response_format json_object: the answer is a JSON object, streamed or not', async () => {
    const body = { model, messages: ask, response_format: { type: 'json_object' as const }, max_tokens: 200, temperature: 0 };
    const r = await client.chat.completions.create(body);
    expect(r.choices[0]!.finish_reason).toBe('stop');
    const value: unknown = JSON.parse(r.choices[0]!.message.content!);
    expect(value !== null && typeof value === 'object' && !Array.isArray(value)).toBe(true);
    const streamed = await client.chat.completions.stream(body).finalChatCompletion();
    expect(streamed.choices[0]!.message.content).toBe(r.choices[0]!.message.content);
  });

  it('a schema the grammar compiler cannot take, or too large a bound, is a 400 naming the field', async () => {
    const bad = client.chat.completions.create({ model, messages: ask, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', minimum: 9, maximum: 1 } } }, max_tokens: 5 });
    await expect(bad).rejects.toMatchObject({ status: 400, param: 'response_format' });
    // Bounded on purpose: a huge maxLength would take the grammar compiler minutes.
    const huge = client.chat.completions.create({ model, messages: ask, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { s: { type: 'string', maxLength: 100000 } } } } }], tool_choice: 'required', max_tokens: 5 });
    await expect(huge).rejects.toMatchObject({ status: 400, param: 'tools' });
  });

  it('logit_bias is honoured: +100 on one token makes every token that one', async () => {
    const id = tokenizer.encode(' blue', { addBos: false })[0]!;
    const r = await client.completions.create({ model, prompt: 'The sky is', max_tokens: 5, temperature: 0, logit_bias: { [String(id)]: 100 } });
    expect(r.choices[0]!.text).toBe(tokenizer.decode([id, id, id, id, id]));
  });

  it('no silent drops: every unknown or unsupported field is a 400 that names it', async () => {
    const chat = { model, messages: ask, max_tokens: 2 };
    const refused: [Record<string, unknown>, string][] = [
      [{ ...chat, functions: [{ name: 'f' }] }, 'functions'],
      [{ ...chat, function_call: 'auto' }, 'function_call'],
      [{ ...chat, reasoning_effort: 'low' }, 'reasoning_effort'],
      [{ ...chat, modalities: ['text'] }, 'modalities'],
      [{ ...chat, prediction: { type: 'content', content: 'x' } }, 'prediction'],
      [{ ...chat, service_tier: 'auto' }, 'service_tier'],
      [{ ...chat, web_search_options: {} }, 'web_search_options'],
      [{ ...chat, stream_options: { include_usage: true, include_obfuscation: false } }, 'stream_options.include_obfuscation'],
      [{ ...chat, messages: [{ role: 'user', content: 'x', audio: {} }] }, 'messages.0.audio'],
      [{ ...chat, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages.0.content'],
      [{ ...chat, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
      [{ ...chat, response_format: { type: 'json_object' }, ignore_eos: true }, 'ignore_eos'],
      [{ ...chat, logit_bias: { '999999999': 5 } }, 'logit_bias'],
    ];
    for (const [body, param] of refused) {
      const res = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const error = ((await res.json()) as { error: { param: string | null; message: string } }).error;
      expect({ status: res.status, param: error.param }, JSON.stringify(body)).toEqual({ status: 400, param });
      expect(error.message).toContain(param.split('.').at(-1)!);
    }
    const completion = { model, prompt: 'x', max_tokens: 2 };
    for (const [body, param] of [
      [{ ...completion, suffix: 'y' }, 'suffix'],
      [{ ...completion, best_of: 2 }, 'best_of'],
      [{ ...completion, echo: true }, 'echo'],
    ] as const) {
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect({ status: res.status, param: ((await res.json()) as { error: { param: string } }).error.param }).toEqual({ status: 400, param });
    }
  });

  it('the documented accept-and-ignore fields (user, metadata, store, message names) are accepted', async () => {
    const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi', name: 'ann' }], max_tokens: 2, user: 'u-1', metadata: { team: 'a' }, store: false });
    expect(r.choices[0]!.finish_reason).toBe('length');
  });
});
