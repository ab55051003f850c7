import type { Tokenizer } from './tokenizer.js';

/**
 * Turns a growing list of token ids into text pieces without ever splitting a multi-byte character
 * (a byte-level BPE token may hold half of one): decode a small window before and after the newest
 * tokens and emit the difference only once it does not end in U+FFFD (as vLLM does).
 */
export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private text = '';

  constructor(
    private readonly tokenizer: Tokenizer,
    /** Tokens of context before the output (e.g. the prompt's last few), for correct leading spaces. */
    context: readonly number[] = [],
  ) {
    this.ids.push(...context);
    this.prefixOffset = this.readOffset = context.length;
  }

  /** Adds tokens; returns the new text they complete (maybe empty while a character is unfinished). */
  push(tokens: readonly number[]): string {
    this.ids.push(...tokens);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    if (full.length > prefix.length && !full.endsWith('\uFFFD')) {
      const piece = full.slice(prefix.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.text += piece;
      return piece;
    }
    return '';
  }

  /** Whatever is still held back (at the end of generation a lone partial character is emitted as is). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const piece = this.tokenizer.decode(this.ids.slice(this.prefixOffset)).slice(prefix.length);
    this.readOffset = this.ids.length;
    this.text += piece;
    return piece;
  }

  get fullText(): string {
    return this.text;
  }
}
