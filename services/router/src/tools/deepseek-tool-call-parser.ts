/**
 * Turns DeepSeek-V3/R1 output text into content and tool calls, incrementally. The models write
 *
 *   [content]<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
 *   [\n<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>]…<｜tool▁calls▁end｜>
 *
 * (the layout of their chat template). Text is fed as it is decoded; each push returns what can be
 * said for sure so far: content, a call's start (its name), pieces of its arguments. Anything
 * that may still turn out to be a marker is held back until it can be told apart from text.
 */
import { partialSuffix } from '../text/partial-suffix.js';

export const TOOL_CALLS_BEGIN = '<｜tool▁calls▁begin｜>';
export const TOOL_CALLS_END = '<｜tool▁calls▁end｜>';
export const TOOL_CALL_BEGIN = '<｜tool▁call▁begin｜>';
export const TOOL_CALL_END = '<｜tool▁call▁end｜>';
export const TOOL_SEP = '<｜tool▁sep｜>';
const ARGS_OPEN = '\n```json\n';
const ARGS_CLOSE = `\n\`\`\`${TOOL_CALL_END}`;

export type ToolCallEvent =
  | { readonly kind: 'content'; readonly text: string }
  | { readonly kind: 'call'; readonly index: number; readonly name: string }
  | { readonly kind: 'arguments'; readonly index: number; readonly text: string };

type State = 'content' | 'between-calls' | 'type' | 'name' | 'args-open' | 'arguments' | 'done';

export class DeepseekToolCallParser {
  private state: State = 'content';
  private pending = '';
  private calls = 0;

  /** Number of tool calls begun so far. */
  get callCount(): number {
    return this.calls;
  }

  push(text: string): ToolCallEvent[] {
    this.pending += text;
    const events: ToolCallEvent[] = [];
    while (this.step(events));
    return events;
  }

  /** At the end of generation: held-back text is content (before any call) or dropped (a cut-off call). */
  flush(): ToolCallEvent[] {
    const rest = this.pending;
    this.pending = '';
    if (this.state === 'content' && rest) return [{ kind: 'content', text: rest }];
    if (this.state === 'arguments' && rest) return [{ kind: 'arguments', index: this.calls - 1, text: rest }];
    return [];
  }

  /** Advances one state; false when it needs more text. */
  private step(events: ToolCallEvent[]): boolean {
    switch (this.state) {
      case 'content': {
        const at = this.pending.indexOf(TOOL_CALLS_BEGIN);
        const upTo = at >= 0 ? at : this.pending.length - partialSuffix(this.pending, TOOL_CALLS_BEGIN);
        if (upTo > 0) events.push({ kind: 'content', text: this.pending.slice(0, upTo) });
        if (at < 0) {
          this.pending = this.pending.slice(upTo);
          return false;
        }
        this.pending = this.pending.slice(at + TOOL_CALLS_BEGIN.length);
        this.state = 'between-calls';
        return true;
      }
      case 'between-calls': {
        const trimmed = this.pending.replace(/^\s+/, '');
        if (trimmed.startsWith(TOOL_CALL_BEGIN)) {
          this.pending = trimmed.slice(TOOL_CALL_BEGIN.length);
          this.state = 'type';
          return true;
        }
        if (trimmed.startsWith(TOOL_CALLS_END)) {
          this.pending = '';
          this.state = 'done';
          return false;
        }
        // Anything else here is not DeepSeek's layout; wait while it may still become a marker.
        if (TOOL_CALL_BEGIN.startsWith(trimmed) || TOOL_CALLS_END.startsWith(trimmed)) {
          this.pending = trimmed;
          return false;
        }
        this.pending = '';
        this.state = 'done';
        return false;
      }
      case 'type':
        return this.until(TOOL_SEP, () => (this.state = 'name'));
      case 'name': {
        const at = this.pending.indexOf('\n');
        if (at < 0) return false;
        events.push({ kind: 'call', index: this.calls++, name: this.pending.slice(0, at).trim() });
        this.pending = this.pending.slice(at);
        this.state = 'args-open';
        return true;
      }
      case 'args-open':
        if (this.pending.length < ARGS_OPEN.length) return false;
        // The model may write the fence a little differently (```json without the newline, or none).
        this.pending = this.pending.replace(/^\n?```(?:json)?\n?/, '');
        this.state = 'arguments';
        return true;
      case 'arguments': {
        const at = this.pending.indexOf(ARGS_CLOSE);
        const alt = at < 0 ? this.pending.indexOf(TOOL_CALL_END) : -1;
        const end = at >= 0 ? at : alt;
        if (end < 0) {
          const keep = Math.max(partialSuffix(this.pending, ARGS_CLOSE), partialSuffix(this.pending, TOOL_CALL_END));
          const safe = this.pending.slice(0, this.pending.length - keep);
          if (safe) events.push({ kind: 'arguments', index: this.calls - 1, text: safe });
          this.pending = this.pending.slice(safe.length);
          return false;
        }
        let args = this.pending.slice(0, end);
        if (alt >= 0) args = args.replace(/\n?```\s*$/, '');
        if (args) events.push({ kind: 'arguments', index: this.calls - 1, text: args });
        this.pending = this.pending.slice(end + (at >= 0 ? ARGS_CLOSE.length : TOOL_CALL_END.length));
        this.state = 'between-calls';
        return true;
      }
      case 'done':
        // Text after the calls (the model should have ended) is not part of the answer.
        this.pending = '';
        return false;
    }
  }

  private until(marker: string, then: () => void): boolean {
    const at = this.pending.indexOf(marker);
    if (at < 0) return false;
    this.pending = this.pending.slice(at + marker.length);
    then();
    return true;
  }
}
