import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApiContext } from './api-context.js';
import type { TokenWithLogprobs } from './generation-session.js';
import { sendJson, SseWriter } from './http-io.js';
import { completionRequestSchema } from './request-schemas.js';
import { checkContext, checkModel, checkPromptBytes, envelope, logitsProcessorsOf, parseBody, requestId, samplingOf, startSession, stopList } from './request-prep.js';

interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** POST /v1/completions (OpenAI's legacy completions, as vLLM serves them). */
export async function handleCompletions(ctx: ApiContext, body: unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const r = parseBody(completionRequestSchema, body);
  checkModel(ctx, r.model);
  const text = typeof r.prompt === 'string' ? r.prompt : typeof r.prompt[0] === 'string' ? r.prompt[0] : null;
  if (text !== null) checkPromptBytes(ctx, [text], 'prompt');
  const promptTokenIds = text !== null ? await ctx.promptTokenizer.encode(text) : (r.prompt as number[]);
  const maxTokens = r.max_tokens ?? 16;
  checkContext(ctx, promptTokenIds.length, maxTokens, 'prompt');
  const n = r.n ?? 1;
  const session = await startSession(ctx, {
    promptTokenIds,
    n,
    maxTokens,
    sampling: samplingOf(r),
    stop: stopList(r.stop),
    ignoreEos: r.ignore_eos ?? false,
    topLogprobs: r.logprobs ?? null,
    reasoning: null,
    logitsProcessors: logitsProcessorsOf(ctx, r),
  });
  req.on('close', () => session.abortUnlessDone());
  res.on('close', () => session.abortUnlessDone());
  const id = requestId('cmpl');
  const created = Math.floor(Date.now() / 1000);
  const head = envelope(ctx, id, 'text_completion', created);
  const toLogprobs = (tokens: readonly TokenWithLogprobs[], offset: number): CompletionLogprobs | null => {
    if (r.logprobs === null || r.logprobs === undefined) return null;
    const texts = tokens.map((t) => ctx.tokenizer.tokenText(t.id));
    const offsets: number[] = [];
    texts.reduce((at, t) => (offsets.push(at), at + t.length), offset);
    return {
      tokens: texts,
      token_logprobs: tokens.map((t) => t.logprob),
      top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map(([tid, lp]) => [ctx.tokenizer.tokenText(tid), lp]))),
      text_offset: offsets,
    };
  };

  if (r.stream) {
    const sse = new SseWriter(res);
    const offsets = new Array<number>(n).fill(0);
    for await (const d of session.deltas()) {
      sse.send({ ...head, choices: [{ index: d.index, text: d.text, logprobs: toLogprobs(d.tokens, offsets[d.index]!), finish_reason: d.finishReason }] });
      offsets[d.index]! += d.text.length;
    }
    if (r.stream_options?.include_usage) sse.send({ ...head, choices: [], usage: session.usage() });
    sse.done();
    return;
  }
  const choices = await session.collect();
  sendJson(res, 200, {
    ...envelope(ctx, id, 'text_completion', created),
    choices: choices.map((c, index) => ({ index, text: c.text, logprobs: toLogprobs(c.tokens, 0), finish_reason: c.finishReason })),
    usage: session.usage(),
  });
}
