import { z } from 'zod';

/**
 * Request bodies, strict: a field this server does not know is refused with a 400 that names it,
 * never dropped. The only fields accepted and ignored on purpose are these (OpenAI clients send
 * them; they ask nothing of generation), plus `name` and `reasoning_content` on messages below.
 */
const ignored = { user: z.string().nullish(), metadata: z.record(z.string()).nullish(), store: z.boolean().nullish() };

/** OpenAI's logit_bias: token id (as a string key) → bias in [-100, 100]. */
const logitBias = z
  .record(z.string().regex(/^\d+$/, 'keys are token ids'), z.number().min(-100).max(100))
  .refine((m) => Object.keys(m).length <= 1024, 'at most 1024 token ids')
  .nullish();

/** Fields the completions and chat endpoints share (OpenAI's names and ranges). */
const sampling = {
  model: z.string(),
  max_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  seed: z.number().int().nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).strict().nullish(),
  ignore_eos: z.boolean().nullish(),
  logit_bias: logitBias,
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  ...ignored,
};

export const completionRequestSchema = z
  .object({
    ...sampling,
    prompt: z.union([z.string(), z.array(z.number().int().nonnegative()).min(1), z.array(z.string()).length(1)]),
    logprobs: z.number().int().min(0).max(20).nullish(),
    echo: z.literal(false, { errorMap: () => ({ message: 'echo is not supported' }) }).nullish(),
    best_of: z.literal(1, { errorMap: () => ({ message: 'best_of other than 1 is not supported' }) }).nullish(),
  })
  .strict();

const textPart = z.object({ type: z.literal('text'), text: z.string() }).strict();
const text = z.union([z.string(), z.array(textPart)]);

const toolCall = z
  .object({
    id: z.string(),
    type: z.literal('function'),
    function: z.object({ name: z.string(), arguments: z.string() }).strict(),
  })
  .strict();

/** `name` on a message is accepted and not rendered: DeepSeek's chat template has no place for it. */
const messageName = { name: z.string().nullish() };

const message = z.discriminatedUnion('role', [
  z.object({ role: z.literal('system'), content: text, ...messageName }).strict(),
  z.object({ role: z.literal('developer'), content: text, ...messageName }).strict(),
  z.object({ role: z.literal('user'), content: text, ...messageName }).strict(),
  z
    .object({
      role: z.literal('assistant'),
      content: text.nullish(),
      tool_calls: z.array(toolCall).max(128).nullish(),
      // Echoed back by clients that append our own answers; R1's template drops past reasoning.
      reasoning_content: z.string().nullish(),
      ...messageName,
    })
    .strict(),
  z.object({ role: z.literal('tool'), content: text, tool_call_id: z.string() }).strict(),
]);

export const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const tool = z
  .object({
    type: z.literal('function'),
    function: z
      .object({
        name: z.string().regex(TOOL_NAME, 'function names are 1-64 of a-z, A-Z, 0-9, _ and -'),
        description: z.string().nullish(),
        parameters: z.record(z.unknown()).nullish(),
        strict: z.boolean().nullish(),
      })
      .strict(),
  })
  .strict();

const toolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: z.string() }).strict() }).strict(),
]);

const responseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }).strict(),
  z.object({ type: z.literal('json_object') }).strict(),
  z
    .object({
      type: z.literal('json_schema'),
      json_schema: z
        .object({ name: z.string().min(1).max(64), description: z.string().nullish(), schema: z.record(z.unknown()).nullish(), strict: z.boolean().nullish() })
        .strict(),
    })
    .strict(),
]);

export const chatRequestSchema = z
  .object({
    ...sampling,
    messages: z.array(message).min(1),
    max_completion_tokens: z.number().int().positive().nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(20).nullish(),
    response_format: responseFormat.nullish(),
    tools: z.array(tool).min(1).max(128).nullish(),
    tool_choice: toolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
  })
  .strict();

export type CompletionRequest = z.infer<typeof completionRequestSchema>;
export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type ChatRequestMessage = ChatRequest['messages'][number];
export type ChatRequestTool = NonNullable<ChatRequest['tools']>[number];
