/**
 * Finds OpenAI `stop` strings in streamed text. Text that could still turn into a stop string is
 * held back, so a stop string split across tokens never reaches the client.
 */
export class StopStringMatcher {
  private pending = '';
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Returns the text safe to emit, and whether a stop string ended the output. */
  push(text: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text, stopped: false };
    this.pending += text;
    let first = -1;
    for (const s of this.stops) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      const out = this.pending.slice(0, first);
      this.pending = '';
      return { text: out, stopped: true };
    }
    // Keep the longest suffix that is a prefix of some stop string.
    let keep = 0;
    for (let n = Math.min(this.longest - 1, this.pending.length); n > 0; n--) {
      const tail = this.pending.slice(-n);
      if (this.stops.some((s) => s.startsWith(tail))) {
        keep = n;
        break;
      }
    }
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return { text: out, stopped: false };
  }

  /** At the end of generation, what was held back is plain text after all. */
  flush(): string {
    const out = this.pending;
    this.pending = '';
    return out;
  }
}
