import { randomUUID } from 'node:crypto';
import { DeepseekToolCallParser, type ToolCallEvent } from '../tools/deepseek-tool-call-parser.js';
import { ReasoningParser } from './reasoning-parser.js';

/** A piece of a tool call: its start (id and name) or more of its JSON arguments. */
export interface ToolCallDelta {
  readonly index: number;
  readonly id?: string;
  readonly name?: string;
  readonly arguments: string;
}

export interface AnswerDelta {
  readonly reasoning: string;
  readonly content: string;
  readonly toolCalls: readonly ToolCallDelta[];
}

/**
 * One choice's text as the chat API returns it: R1's reasoning apart (`reasoning_content`), then,
 * in the answer, DeepSeek tool-call blocks apart from the content (`tool_calls`).
 */
export class AnswerParser {
  private readonly reasoning: ReasoningParser | null;
  private readonly tools: DeepseekToolCallParser | null;

  constructor(options: { readonly reasoning: { readonly startsInsideThink: boolean } | null; readonly toolCalls: boolean }) {
    this.reasoning = options.reasoning ? new ReasoningParser(options.reasoning.startsInsideThink) : null;
    this.tools = options.toolCalls ? new DeepseekToolCallParser() : null;
  }

  /** Whether the answer called a tool (finish_reason "tool_calls"). */
  get calledTools(): boolean {
    return (this.tools?.callCount ?? 0) > 0;
  }

  push(text: string): AnswerDelta {
    const split = this.reasoning ? this.reasoning.push(text) : { reasoning: '', content: text };
    return { reasoning: split.reasoning, ...this.answer(this.tools?.push(split.content) ?? [{ kind: 'content', text: split.content }]) };
  }

  /** At the end of generation: whatever was held back. */
  finish(): AnswerDelta {
    const split = this.reasoning ? this.reasoning.flush() : { reasoning: '', content: '' };
    const events = this.tools ? [...this.tools.push(split.content), ...this.tools.flush()] : [{ kind: 'content' as const, text: split.content }];
    return { reasoning: split.reasoning, ...this.answer(events) };
  }

  /** Parser events as content and tool-call deltas (each call gets an id when it starts). */
  private answer(events: readonly ToolCallEvent[]): { content: string; toolCalls: ToolCallDelta[] } {
    let content = '';
    const toolCalls: ToolCallDelta[] = [];
    for (const e of events) {
      if (e.kind === 'content') content += e.text;
      else if (e.kind === 'call') toolCalls.push({ index: e.index, id: `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`, name: e.name, arguments: '' });
      else {
        const last = toolCalls.at(-1);
        if (last && last.index === e.index) toolCalls[toolCalls.length - 1] = { ...last, arguments: last.arguments + e.text };
        else toolCalls.push({ index: e.index, arguments: e.text });
      }
    }
    return { content, toolCalls };
  }
}
