/** A stretch in which the event loop ran nothing else: synchronous work (or a native call) held it. */
export interface LoopBlock {
  readonly ms: number;
  /** What was running when it ended (a test's name, or its file's collection and hooks). */
  readonly during: string;
}

/**
 * Finds event-loop blocks from the times a periodic timer actually ran: a tick one period after the last is on
 * time, a tick much later means the loop was held that long, less the period.
 */
export class LoopBlockWatch {
  private last: number;

  constructor(
    private readonly periodMs: number,
    /** Blocks shorter than this are not reported. */
    private readonly reportMs: number,
    now: number,
  ) {
    this.last = now;
  }

  /** The timer ran at `now` (ms) while `during` was running: the block this tick ends, when it reaches reportMs. */
  tick(now: number, during: string): LoopBlock | null {
    const ms = now - this.last - this.periodMs;
    this.last = now;
    return ms >= this.reportMs ? { ms, during } : null;
  }
}
