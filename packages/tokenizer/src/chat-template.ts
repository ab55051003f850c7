import { Template } from '@huggingface/jinja';

/** A call the assistant made, as OpenAI's API and DeepSeek's chat template spell it. */
export interface ChatToolCall {
  readonly id: string;
  readonly type: 'function';
  readonly function: { readonly name: string; readonly arguments: string };
}

export type ChatMessage =
  | { readonly role: 'system' | 'user'; readonly content: string }
  /** `content` null with `tool_calls`: a turn that only calls tools. */
  | { readonly role: 'assistant'; readonly content: string | null; readonly tool_calls?: readonly ChatToolCall[] }
  | { readonly role: 'tool'; readonly content: string; readonly tool_call_id?: string };

/** A function the model may call (OpenAI's `tools[].function`). */
export interface ChatToolFunction {
  readonly name: string;
  readonly description?: string;
  readonly parameters?: Readonly<Record<string, unknown>>;
}

export class ChatTemplateError extends Error {
  override readonly name = 'ChatTemplateError';
}

/** The checkpoint's Jinja chat template (tokenizer_config.json `chat_template`), compiled once. */
export class ChatTemplate {
  private readonly template: Template;
  /** Whether the template renders a `tools` variable itself (DeepSeek-V3/R1's do not). */
  readonly rendersTools: boolean;

  constructor(
    source: string,
    private readonly specialTokens: { readonly bos_token: string; readonly eos_token: string },
  ) {
    try {
      this.template = new Template(source);
    } catch (cause) {
      throw new ChatTemplateError(`the chat template does not parse: ${(cause as Error).message}`, { cause });
    }
    this.rendersTools = /\btools\b/.test(source);
  }

  /**
   * The prompt text for `messages`, ending with the assistant's turn when `addGenerationPrompt`.
   * `tools` is passed to templates that render it; for the others the caller describes the tools
   * in a system message (see rendersTools).
   */
  render(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean; tools?: readonly ChatToolFunction[] } = {}): string {
    try {
      return this.template.render({
        // A message without tool calls must not have the key at all: DeepSeek's template tests `'tool_calls' in message`.
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        ...(options.tools && this.rendersTools ? { tools: options.tools.map((f) => ({ type: 'function', function: f })) } : {}),
        ...this.specialTokens,
      });
    } catch (cause) {
      throw new ChatTemplateError(`the chat template failed on these messages: ${(cause as Error).message}`, { cause });
    }
  }
}
