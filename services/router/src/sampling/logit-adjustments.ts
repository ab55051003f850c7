import type { LogitsProcessor } from '@expertmesh/engine';

/** OpenAI's logit_bias: a fixed amount added to chosen tokens' logits at every step (±100 bans or forces). */
export class LogitBias implements LogitsProcessor {
  constructor(private readonly bias: ReadonlyMap<number, number>) {}

  process(logits: Float32Array): void {
    for (const [id, b] of this.bias) logits[id] = logits[id]! + b;
  }

  accept(): void {}
}

/**
 * OpenAI's presence and frequency penalties over the tokens generated so far:
 * logit -= presence·[count > 0] + frequency·count.
 */
export class RepetitionPenalties implements LogitsProcessor {
  private readonly counts = new Map<number, number>();

  constructor(
    private readonly presence: number,
    private readonly frequency: number,
  ) {}

  process(logits: Float32Array): void {
    for (const [id, n] of this.counts) logits[id] = logits[id]! - this.presence - this.frequency * n;
  }

  accept(tokenId: number): void {
    this.counts.set(tokenId, (this.counts.get(tokenId) ?? 0) + 1);
  }
}
