import type { ChatMessage, ChatToolFunction } from '@expertmesh/tokenizer';
import type { OutputSpec } from '../structured/output-constraints.js';
import { toolSystemPrompt } from '../tools/tool-prompt.js';
import { badRequest } from './api-error.js';
import type { ChatRequest, ChatRequestMessage } from './request-schemas.js';

/** What a chat request asks of its output: tools offered, calls parsed, and the grammar (if any) it must follow. */
export interface ChatOutputPlan {
  /** Functions described to the model (none with tool_choice "none"). */
  readonly functions: readonly ChatToolFunction[];
  /** Turn DeepSeek tool-call blocks in the answer into `tool_calls`. */
  readonly parseToolCalls: boolean;
  /** The output grammar, and which request field its schemas came from (for errors). */
  readonly constraint: { readonly spec: OutputSpec; readonly param: 'response_format' | 'tools' } | null;
}

export function planChatOutput(r: ChatRequest): ChatOutputPlan {
  const tools = r.tools ?? [];
  const choice = r.tool_choice ?? (tools.length ? 'auto' : 'none');
  if (tools.length === 0 && r.tool_choice && r.tool_choice !== 'none') throw badRequest('tool_choice needs tools: give the functions the model may call', 'tool_choice');
  if (r.parallel_tool_calls !== undefined && r.parallel_tool_calls !== null && tools.length === 0) throw badRequest('parallel_tool_calls needs tools', 'parallel_tool_calls');
  const names = new Set<string>();
  for (const t of tools) {
    if (names.has(t.function.name)) throw badRequest(`two tools are named ${t.function.name}: function names must be unique`, 'tools');
    names.add(t.function.name);
  }
  const functions: ChatToolFunction[] =
    choice === 'none'
      ? []
      : tools.map((t) => ({
          name: t.function.name,
          ...(t.function.description ? { description: t.function.description } : {}),
          parameters: t.function.parameters ?? { type: 'object', properties: {} },
        }));

  let toolSpec: OutputSpec | null = null;
  if (typeof choice === 'object') {
    const f = functions.find((x) => x.name === choice.function.name);
    if (!f) throw badRequest(`tool_choice names ${choice.function.name}, which is not among the tools`, 'tool_choice');
    toolSpec = { kind: 'tool-calls', functions: [{ name: f.name, parameters: f.parameters ?? {} }], parallel: false, forced: true };
  } else if (choice === 'required') {
    toolSpec = { kind: 'tool-calls', functions: functions.map((f) => ({ name: f.name, parameters: f.parameters ?? {} })), parallel: r.parallel_tool_calls ?? true, forced: true };
  }

  const format = r.response_format;
  const jsonSpec: OutputSpec | null =
    format?.type === 'json_object' ? { kind: 'json', schema: null } : format?.type === 'json_schema' ? { kind: 'json', schema: format.json_schema.schema ?? null } : null;
  if (toolSpec && jsonSpec) throw badRequest('response_format cannot be combined with a tool_choice that forces a call: the answer is a tool call', 'response_format');

  // tool_choice auto with a strict tool (OpenAI's strict function calling): the model may answer in
  // text, but a call it opens must follow the layout and the functions' schemas.
  const strictAuto: OutputSpec | null =
    choice === 'auto' && tools.some((t) => t.function.strict)
      ? { kind: 'tool-calls', functions: functions.map((f) => ({ name: f.name, parameters: f.parameters ?? {} })), parallel: r.parallel_tool_calls ?? true, forced: false }
      : null;
  const constraint = toolSpec ?? jsonSpec ?? strictAuto;
  return {
    functions,
    parseToolCalls: functions.length > 0 && !jsonSpec,
    constraint: constraint ? { spec: constraint, param: constraint === jsonSpec ? 'response_format' : 'tools' } : null,
  };
}

/**
 * The request's messages as the chat template takes them. When tools are offered and the template
 * does not render them itself (DeepSeek's do not), they are described in a system message.
 */
export function templateMessages(messages: readonly ChatRequestMessage[], functions: readonly ChatToolFunction[], templateRendersTools: boolean): ChatMessage[] {
  const out: ChatMessage[] = messages.map((m) => {
    switch (m.role) {
      case 'system':
      case 'developer':
        return { role: 'system', content: textOf(m.content) };
      case 'user':
        return { role: 'user', content: textOf(m.content) };
      case 'tool':
        return { role: 'tool', content: textOf(m.content), tool_call_id: m.tool_call_id };
      case 'assistant': {
        const content = m.content === null || m.content === undefined ? null : textOf(m.content);
        return m.tool_calls?.length ? { role: 'assistant', content: content || null, tool_calls: m.tool_calls } : { role: 'assistant', content: content ?? '' };
      }
    }
  });
  if (functions.length > 0 && !templateRendersTools) {
    // After the client's own system prompt(s), which DeepSeek's template joins with blank lines.
    const lastSystem = out.findLastIndex((m) => m.role === 'system');
    out.splice(lastSystem + 1, 0, { role: 'system', content: toolSystemPrompt(functions) });
  }
  return out;
}

const textOf = (content: string | readonly { readonly text: string }[]): string => (typeof content === 'string' ? content : content.map((p) => p.text).join(''));
