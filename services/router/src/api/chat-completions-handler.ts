import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ChatMessage } from '@expertmesh/tokenizer';
import { badRequest } from './api-error.js';
import type { ApiContext } from './api-context.js';
import type { TokenWithLogprobs } from './generation-session.js';
import { sendJson, SseWriter } from './http-io.js';
import { chatRequestSchema, type ChatRequest } from './request-schemas.js';
import { checkContext, checkModel, envelope, parseBody, requestId, samplingOf, startSession, stopList } from './request-prep.js';

const R1_OPENED_THINK = '<think>\n';

function toTemplateMessages(messages: ChatRequest['messages']): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: m.content === null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
  }));
}

/** POST /v1/chat/completions, with R1's reasoning returned as `reasoning_content`. */
export async function handleChatCompletions(ctx: ApiContext, body: unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const r = parseBody(chatRequestSchema, body);
  checkModel(ctx, r.model);
  const template = ctx.tokenizer.chatTemplate;
  if (!template) throw badRequest('this model has no chat template (tokenizer_config.json chat_template): use /v1/completions');
  const prompt = template.render(toTemplateMessages(r.messages));
  const promptTokenIds = ctx.tokenizer.encode(prompt, { addBos: false });
  const maxTokens = r.max_completion_tokens ?? r.max_tokens ?? Math.min(ctx.defaultMaxTokens, Math.max(1, ctx.maxModelLen - promptTokenIds.length));
  checkContext(ctx, promptTokenIds.length, maxTokens);
  const n = r.n ?? 1;
  const wantLogprobs = r.logprobs === true;
  const session = startSession(ctx, {
    promptTokenIds,
    n,
    maxTokens,
    sampling: samplingOf(r),
    stop: stopList(r.stop),
    ignoreEos: r.ignore_eos ?? false,
    topLogprobs: wantLogprobs ? (r.top_logprobs ?? 0) : null,
    reasoning: ctx.reasoningParser === 'deepseek-r1' ? { startsInsideThink: prompt.endsWith(R1_OPENED_THINK) } : null,
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
      const delta: Record<string, string> = {};
      if (d.reasoning) delta.reasoning_content = d.reasoning;
      if (d.text || !d.reasoning) delta.content = d.text;
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
      message: { role: 'assistant', content: c.text, ...(ctx.reasoningParser === 'deepseek-r1' ? { reasoning_content: c.reasoning || null } : {}) },
      logprobs: toLogprobs(c.tokens),
      finish_reason: c.finishReason,
    })),
    usage: session.usage(),
  });
}
