/**
 * Splits DeepSeek-R1 output into `reasoning_content` (inside <think>…</think>) and `content`, as
 * DeepSeek's own API returns it. R1's chat template opens the block itself ("<｜Assistant｜><think>\n"),
 * so generation may start inside it; otherwise a leading "<think>" opens it. Tags split across
 * stream chunks are held back until they can be told apart from text.
 */
import { partialSuffix } from './partial-suffix.js';

const OPEN = '<think>';
const CLOSE = '</think>';

export interface ReasoningDelta {
  readonly reasoning: string;
  readonly content: string;
}

export class ReasoningParser {
  /** 'after-reasoning': the newlines R1 writes after </think> are dropped, in whichever chunks they come. */
  private state: 'start' | 'reasoning' | 'after-reasoning' | 'content';
  private pending = '';

  constructor(startsInsideThink: boolean) {
    this.state = startsInsideThink ? 'reasoning' : 'start';
  }

  push(text: string): ReasoningDelta {
    this.pending += text;
    let reasoning = '';
    let content = '';
    for (;;) {
      if (this.state === 'start') {
        const trimmed = this.pending.trimStart();
        if (trimmed.startsWith(OPEN)) {
          this.pending = trimmed.slice(OPEN.length).replace(/^\n/, '');
          this.state = 'reasoning';
          continue;
        }
        if (OPEN.startsWith(trimmed)) break; // maybe the tag, not yet complete
        this.state = 'content';
        continue;
      }
      if (this.state === 'reasoning') {
        const at = this.pending.indexOf(CLOSE);
        if (at >= 0) {
          reasoning += this.pending.slice(0, at);
          this.pending = this.pending.slice(at + CLOSE.length);
          this.state = 'after-reasoning';
          continue;
        }
        const keep = partialSuffix(this.pending, CLOSE);
        reasoning += this.pending.slice(0, this.pending.length - keep);
        this.pending = this.pending.slice(this.pending.length - keep);
        break;
      }
      if (this.state === 'after-reasoning') {
        this.pending = this.pending.replace(/^\n+/, '');
        if (!this.pending) break;
        this.state = 'content';
      }
      content += this.pending;
      this.pending = '';
      break;
    }
    return { reasoning, content };
  }

  /** Held-back text at the end belongs to whichever part it was in. */
  flush(): ReasoningDelta {
    const rest = this.pending;
    this.pending = '';
    return this.state === 'reasoning' ? { reasoning: rest, content: '' } : { reasoning: '', content: rest };
  }
}
