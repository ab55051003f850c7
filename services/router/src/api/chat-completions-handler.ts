import type { IncomingMessage, ServerResponse } from 'node:http';
import { GrammarError } from '../structured/xgrammar.js';
import { badRequest } from './api-error.js';
import type { ApiContext } from './api-context.js';
import { planChatOutput, templateMessages } from './chat-output-plan.js';
import type { CollectedChoice, ToolCallDelta, TokenWithLogprobs } from './generation-session.js';
import { sendJson, SseWriter } from './http-io.js';
import { chatRequestSchema } from './request-schemas.js';
import { checkContext, checkModel, checkPromptBytes, envelope, logitsProcessorsOf, parseBody, requestId, samplingOf, startSession, stopList } from './request-prep.js';

const R1_OPENED_THINK = '<think>\n';

/**
 * POST /v1/chat/completions: R1's reasoning returned as `reasoning_content`, DeepSeek tool-call
 * blocks as `tool_calls`, and response_format / forced tool calls enforced by a grammar.
 */
export async function handleChatCompletions(ctx: ApiContext, body: unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const r = parseBody(chatRequestSchema, body);
  checkModel(ctx, r.model);
  const template = ctx.tokenizer.chatTemplate;
  if (!template) throw badRequest('this model has no chat template (tokenizer_config.json chat_template): use /v1/completions');
  // The messages as sent, in bytes, before any template or tokenizer work is spent on them.
  checkPromptBytes(ctx, [JSON.stringify(r.messages)], 'messages');
  const plan = planChatOutput(r);
  const prompt = template.render(templateMessages(r.messages, plan.functions, template.rendersTools), { tools: plan.functions });
  const promptTokenIds = await ctx.promptTokenizer.encode(prompt, { addBos: false });
  const maxTokens = r.max_completion_tokens ?? r.max_tokens ?? Math.min(ctx.defaultMaxTokens, Math.max(1, ctx.maxModelLen - promptTokenIds.length));
  checkContext(ctx, promptTokenIds.length, maxTokens, 'messages');
  const opensReasoning = ctx.reasoningParser === 'deepseek-r1' && prompt.endsWith(R1_OPENED_THINK);
  const constraint = plan.constraint;
  if (constraint && r.ignore_eos) throw badRequest('ignore_eos cannot be combined with constrained output: the grammar ends the answer', 'ignore_eos');
  if (constraint) {
    // Compile now, so a schema XGrammar cannot take is a 400 before anything starts.
    try {
      await ctx.outputConstraints.compiled(constraint.spec, { afterReasoning: opensReasoning });
    } catch (e) {
      if (e instanceof GrammarError) throw badRequest(`${constraint.param}: ${e.message}`, constraint.param);
      throw e;
    }
  }
  const n = r.n ?? 1;
  const wantLogprobs = r.logprobs === true;
  const session = await startSession(ctx, {
    promptTokenIds,
    n,
    maxTokens,
    sampling: samplingOf(r),
    stop: stopList(r.stop),
    ignoreEos: r.ignore_eos ?? false,
    topLogprobs: wantLogprobs ? (r.top_logprobs ?? 0) : null,
    reasoning: ctx.reasoningParser === 'deepseek-r1' ? { startsInsideThink: opensReasoning } : null,
    parseToolCalls: plan.parseToolCalls,
    logitsProcessors: logitsProcessorsOf(ctx, r, constraint ? () => ctx.outputConstraints.constraint(constraint.spec, { afterReasoning: opensReasoning }) : null),
  });
  req.on('close', () => session.abortUnlessDone());
  res.on('close', () => session.abortUnlessDone());
  const id = requestId('chatcmpl');
  const created = Math.floor(Date.now() / 1000);
  const head = envelope(ctx, id, 'chat.completion.chunk', created);
  const entry = (id: number, logprob: number): { token: string; logprob: number; bytes: number[] } => {
    const token = ctx.tokenizer.tokenText(id);
    return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
  };
  const toLogprobs = (tokens: readonly TokenWithLogprobs[]): { content: object[] } | null =>
    wantLogprobs ? { content: tokens.map((t) => ({ ...entry(t.id, t.logprob), top_logprobs: t.top.map(([tid, lp]) => entry(tid, lp)) })) } : null;

  if (r.stream) {
    const sse = new SseWriter(res);
    for (let index = 0; index < n; index++) {
      sse.send({ ...head, choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
    }
    for await (const d of session.deltas()) {
      const delta: Record<string, unknown> = {};
      if (d.reasoning) delta.reasoning_content = d.reasoning;
      if (d.text || (!d.reasoning && d.toolCalls.length === 0)) delta.content = d.text;
      if (d.toolCalls.length) delta.tool_calls = d.toolCalls.map(toolCallChunk);
      sse.send({ ...head, choices: [{ index: d.index, delta, logprobs: toLogprobs(d.tokens), finish_reason: d.finishReason }] });
    }
    if (r.stream_options?.include_usage) sse.send({ ...head, choices: [], usage: session.usage() });
    sse.done();
    return;
  }
  const choices = await session.collect();
  sendJson(res, 200, {
    ...envelope(ctx, id, 'chat.completion', created),
    choices: choices.map((c, index) => ({
      index,
      message: assistantMessage(c, ctx.reasoningParser === 'deepseek-r1'),
      logprobs: toLogprobs(c.tokens),
      finish_reason: c.finishReason,
    })),
    usage: session.usage(),
  });
}

/** A streamed tool-call piece in OpenAI's chunk layout (id, type and name only on a call's first chunk). */
function toolCallChunk(t: ToolCallDelta): object {
  return t.id !== undefined ? { index: t.index, id: t.id, type: 'function', function: { name: t.name, arguments: t.arguments } } : { index: t.index, function: { arguments: t.arguments } };
}

function assistantMessage(c: CollectedChoice, withReasoning: boolean): object {
  const calls = c.toolCalls.filter((t) => t !== undefined);
  return {
    role: 'assistant',
    // OpenAI's shape: content null when the turn only calls tools.
    content: calls.length && !c.text ? null : c.text,
    ...(withReasoning ? { reasoning_content: c.reasoning || null } : {}),
    ...(calls.length ? { tool_calls: calls.map((t) => ({ id: t.id, type: 'function', function: { name: t.name, arguments: t.arguments } })) } : {}),
  };
}
