import { z } from 'zod';
import { InvalidRequestError, type LogitsProcessor, type SamplingParams } from '@expertmesh/engine';
import { LogitBias, RepetitionPenalties } from '../sampling/logit-adjustments.js';
import { ApiError, badRequest } from './api-error.js';
import type { ApiContext } from './api-context.js';
import { GenerationSession, type SessionOptions } from './generation-session.js';
import { QueueFullError } from '../serving/engine-loop.js';

export function parseBody<S extends z.ZodTypeAny>(schema: S, body: unknown): z.infer<S> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      // Never drop a field silently: name it, so the client knows it was not honoured.
      const param = [...issue.path, issue.keys[0]!].join('.');
      throw badRequest(`${param}: this server does not support this field (unrecognized: ${issue.keys.join(', ')})`, param);
    }
    const param = issue.path.join('.') || null;
    throw badRequest(`${param ?? 'body'}: ${issue.message}`, param);
  }
  return parsed.data;
}

export function checkModel(ctx: ApiContext, model: string): void {
  if (model !== ctx.modelName) throw new ApiError(404, `The model \`${model}\` does not exist; this server serves \`${ctx.modelName}\``, 'not_found_error', 'model', 'model_not_found');
}

export function samplingOf(r: { temperature?: number | null; top_p?: number | null; top_k?: number | null; seed?: number | null }): SamplingParams {
  return { temperature: r.temperature ?? 1, topP: r.top_p ?? 1, topK: r.top_k && r.top_k > 0 ? r.top_k : 0, ...(r.seed !== null && r.seed !== undefined ? { seed: r.seed } : {}) };
}

/** `promptParam`: the field that holds the prompt (`prompt` or `messages`), named when the prompt is what is too long. */
export function checkContext(ctx: ApiContext, promptTokens: number, maxTokens: number, promptParam: 'prompt' | 'messages'): void {
  if (promptTokens + maxTokens > ctx.maxModelLen) {
    throw badRequest(
      `This model's maximum context length is ${ctx.maxModelLen} tokens. However, you requested ${promptTokens + maxTokens} tokens (${promptTokens} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or the completion length.`,
      promptTokens >= ctx.maxModelLen ? promptParam : 'max_tokens',
    );
  }
}

/** Refuses a prompt longer than --max-prompt-bytes before any work is spent tokenizing it. */
export function checkPromptBytes(ctx: ApiContext, texts: readonly string[], promptParam: 'prompt' | 'messages'): void {
  let bytes = 0;
  for (const t of texts) bytes += Buffer.byteLength(t, 'utf8');
  if (bytes > ctx.maxPromptBytes) {
    throw badRequest(`The prompt is ${bytes} bytes; this server accepts at most ${ctx.maxPromptBytes} bytes of prompt text (--max-prompt-bytes). Please reduce the prompt.`, promptParam);
  }
}

/** Starts the generation, turning engine refusals into API errors (429 when the queue is full). */
export async function startSession(ctx: ApiContext, options: SessionOptions): Promise<GenerationSession> {
  const session = new GenerationSession(ctx.loop, ctx.tokenizer, options, ctx.metrics);
  try {
    await session.start();
  } catch (e) {
    if (e instanceof QueueFullError) throw new ApiError(429, e.message, 'rate_limit_error', null, 'queue_full', e.retryAfterSeconds);
    if (e instanceof InvalidRequestError) throw badRequest(e.message);
    throw e;
  }
  return session;
}

/**
 * Per-choice logits processors for logit_bias and the presence/frequency penalties, plus `extra`
 * (e.g. a grammar), in that order: the grammar's mask comes last so nothing can undo it.
 */
export function logitsProcessorsOf(
  ctx: ApiContext,
  r: { logit_bias?: Record<string, number> | null; presence_penalty?: number | null; frequency_penalty?: number | null },
  extra: (() => Promise<LogitsProcessor>) | null = null,
): ((choice: number) => Promise<LogitsProcessor[]>) | undefined {
  const bias = new Map<number, number>();
  for (const [key, value] of Object.entries(r.logit_bias ?? {})) {
    const id = Number(key);
    if (id >= ctx.vocabSize) throw badRequest(`logit_bias names token ${id}, outside the vocabulary [0, ${ctx.vocabSize})`, 'logit_bias');
    if (value !== 0) bias.set(id, value);
  }
  const presence = r.presence_penalty ?? 0;
  const frequency = r.frequency_penalty ?? 0;
  if (bias.size === 0 && presence === 0 && frequency === 0 && !extra) return undefined;
  return async () => [
    ...(bias.size ? [new LogitBias(bias)] : []),
    ...(presence || frequency ? [new RepetitionPenalties(presence, frequency)] : []),
    ...(extra ? [await extra()] : []),
  ];
}

export const stopList = (stop: string | string[] | null | undefined): string[] => (stop === null || stop === undefined ? [] : typeof stop === 'string' ? [stop] : stop);

let counter = 0;
export const requestId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}${(counter++).toString(36)}`;

/** The fields every completion object and chunk starts with. */
export function envelope(ctx: ApiContext, id: string, object: string, created: number): { id: string; object: string; created: number; model: string } {
  return { id, object, created, model: ctx.modelName };
}
