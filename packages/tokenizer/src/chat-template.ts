import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant' | 'tool';
  readonly content: string;
}

export class ChatTemplateError extends Error {
  override readonly name = 'ChatTemplateError';
}

/** The checkpoint's Jinja chat template (tokenizer_config.json `chat_template`), compiled once. */
export class ChatTemplate {
  private readonly template: Template;

  constructor(
    source: string,
    private readonly specialTokens: { readonly bos_token: string; readonly eos_token: string },
  ) {
    try {
      this.template = new Template(source);
    } catch (cause) {
      throw new ChatTemplateError(`the chat template does not parse: ${(cause as Error).message}`, { cause });
    }
  }

  /** The prompt text for `messages`, ending with the assistant's turn when `addGenerationPrompt`. */
  render(messages: readonly ChatMessage[], addGenerationPrompt = true): string {
    try {
      return this.template.render({ messages: messages.map((m) => ({ ...m })), add_generation_prompt: addGenerationPrompt, ...this.specialTokens });
    } catch (cause) {
      throw new ChatTemplateError(`the chat template failed on these messages: ${(cause as Error).message}`, { cause });
    }
  }
}
