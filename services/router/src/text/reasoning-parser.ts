/**
 * Splits DeepSeek-R1 output into `reasoning_content` (inside <think>…</think>) and `content`, as
 * DeepSeek's own API returns it. R1's chat template opens the block itself ("<｜Assistant｜><think>\n"),
 * so generation may start inside it; otherwise a leading "<think>" opens it. Tags split across
 * stream chunks are held back until they can be told apart from text.
 */
const OPEN = '<think>';
const CLOSE = '</think>';

export interface ReasoningDelta {
  readonly reasoning: string;
  readonly content: string;
}

export class ReasoningParser {
  private state: 'start' | 'reasoning' | 'content';
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
          this.pending = this.pending.slice(at + CLOSE.length).replace(/^\n+/, '');
          this.state = 'content';
          continue;
        }
        const keep = partialSuffix(this.pending, CLOSE);
        reasoning += this.pending.slice(0, this.pending.length - keep);
        this.pending = this.pending.slice(this.pending.length - keep);
        break;
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

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (tag.startsWith(text.slice(-n))) return n;
  return 0;
}
