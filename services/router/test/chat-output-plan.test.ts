import { describe, expect, it } from 'vitest';
import { DEEPSEEK_CHAT_TEMPLATES } from '@expertmesh/checkpoint-maker';
import { ChatTemplate } from '@expertmesh/tokenizer';
import { ApiError } from '../src/api/api-error.js';
import { planChatOutput, templateMessages } from '../src/api/chat-output-plan.js';
import { chatRequestSchema, type ChatRequest } from '../src/api/request-schemas.js';

const weather = { type: 'function' as const, function: { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };
const request = (extra: Record<string, unknown>): ChatRequest => chatRequestSchema.parse({ model: 'm', messages: [{ role: 'user', content: 'Hi' }], ...extra });
const refusal = (extra: Record<string, unknown>): ApiError => {
  try {
    planChatOutput(request(extra));
  } catch (e) {
    return e as ApiError;
  }
  throw new Error('expected a refusal');
};

describe('chat output plan', () => {
  it('a named tool_choice forces one call of that function; required forces at least one of any', () => {
    expect(planChatOutput(request({ tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } } })).constraint).toEqual({
      spec: { kind: 'tool-calls', functions: [{ name: 'get_weather', parameters: weather.function.parameters }], parallel: false, forced: true },
      param: 'tools',
    });
    expect(planChatOutput(request({ tools: [weather], tool_choice: 'required', parallel_tool_calls: false })).constraint?.spec).toMatchObject({ kind: 'tool-calls', parallel: false });
    expect(planChatOutput(request({ tools: [weather] }))).toMatchObject({ parseToolCalls: true, constraint: null });
    // strict: true (OpenAI's strict function calling) constrains the calls the model chooses to make.
    const strict = { ...weather, function: { ...weather.function, strict: true } };
    expect(planChatOutput(request({ tools: [strict] })).constraint).toMatchObject({ spec: { kind: 'tool-calls', forced: false }, param: 'tools' });
    expect(planChatOutput(request({ tools: [weather], tool_choice: 'none' }))).toMatchObject({ functions: [], parseToolCalls: false, constraint: null });
  });

  it('response_format becomes a JSON grammar', () => {
    expect(planChatOutput(request({ response_format: { type: 'json_object' } })).constraint).toEqual({ spec: { kind: 'json', schema: null }, param: 'response_format' });
    const schema = { type: 'object', properties: { a: { type: 'integer' } } };
    expect(planChatOutput(request({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } })).constraint?.spec).toEqual({ kind: 'json', schema });
  });

  it('refuses what cannot be honoured, naming the field', () => {
    expect(refusal({ tool_choice: 'required' })).toMatchObject({ status: 400, param: 'tool_choice' });
    expect(refusal({ tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } })).toMatchObject({ param: 'tool_choice' });
    expect(refusal({ tools: [weather, weather] })).toMatchObject({ param: 'tools' });
    expect(refusal({ tools: [weather], tool_choice: 'required', response_format: { type: 'json_object' } })).toMatchObject({ param: 'response_format' });
    expect(refusal({ parallel_tool_calls: true })).toMatchObject({ param: 'parallel_tool_calls' });
  });
});

describe('tool history through DeepSeek-R1\'s chat template', () => {
  const template = new ChatTemplate(DEEPSEEK_CHAT_TEMPLATES['deepseek-r1'], { bos_token: '<｜begin▁of▁sentence｜>', eos_token: '<｜end▁of▁sentence｜>' });
  it('renders calls and results in DeepSeek\'s layout, with the tools described in the system prompt', () => {
    const r = request({
      tools: [weather],
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Rome"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '18C' },
        { role: 'tool', tool_call_id: 'call_2', content: '24C' },
      ],
    });
    const plan = planChatOutput(r);
    const prompt = template.render(templateMessages(r.messages, plan.functions, template.rendersTools));
    const system = prompt.slice('<｜begin▁of▁sentence｜>'.length, prompt.indexOf('<｜User｜>'));
    expect(system.startsWith('Be brief.\n\n## Tools')).toBe(true);
    expect(system).toContain(JSON.stringify({ type: 'function', function: { name: 'get_weather', description: 'Weather now', parameters: weather.function.parameters } }));
    expect(prompt.slice(prompt.indexOf('<｜User｜>'))).toBe(
      '<｜User｜>Weather in Paris and Rome?<｜Assistant｜><｜tool▁calls▁begin｜>' +
        '<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>\n' +
        '<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Rome"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>' +
        '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜><｜tool▁output▁begin｜>24C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>',
    );
  });

  it('past reasoning is not sent back to the model', () => {
    const r = request({ messages: [{ role: 'user', content: 'A' }, { role: 'assistant', content: '<think>x</think>B', reasoning_content: 'x' }, { role: 'user', content: 'C' }] });
    expect(template.render(templateMessages(r.messages, [], false))).toBe('<｜begin▁of▁sentence｜><｜User｜>A<｜Assistant｜>B<｜end▁of▁sentence｜><｜User｜>C<｜Assistant｜><think>\n');
  });
});
