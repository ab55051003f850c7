/**
 * The moments a serving shard's switch work disturbs least: right after it answered a call for the
 * model's last MoE layer. A decode step calls every shard once per MoE layer; after the last layer's
 * answers the router runs its own part (final norm, LM head, sampling, the next step's embedding and
 * dense layers: ~30 ms of the ~65 ms step in the demo bench) and calls no shard. A graph build or a
 * record write started then is mostly done before the next call arrives; started the instant a
 * record lands, it falls on a call of this shard (which waits for the build: onnxruntime builds on
 * the serving thread) and on the other shards' calls (the core they share is busy) at random.
 */
export class StepEnds {
  private waiters: (() => void)[] = [];
  private lastAnsweredAt = -Infinity;
  private lastAnsweredLayer = -1;

  constructor(
    /** The layer whose answer ends a step: the model's last MoE layer. */
    private readonly lastLayer: number,
    /** No call answered for this long: the shard is idle and nothing is waited for. */
    private readonly idleMs = 150,
    /** The longest wait for a step's end (a shard that holds no expert of the last layer, a router that stopped). */
    private readonly maxWaitMs = 150,
    /** A step ended less than this ago and no call came since: still its quiet part, no need to wait for the next. */
    private readonly stillQuietMs = 10,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Whether this shard has answered any call yet. One that has not (a shard joining the cluster, before
   * its record says it serves) has no calls to delay and no steps to pace on: its StepEnds is "idle".
   */
  get answeredAny(): boolean {
    return this.lastAnsweredAt > -Infinity;
  }

  /**
   * A call for `layer` has been answered (its result handed to the transport). At the end of a step
   * the waiters resume two event-loop turns later, once the answer's write is on the socket (see
   * ComputeTurns), so their work does not hold this answer back either.
   */
  answered(layer: number): void {
    this.lastAnsweredAt = this.now();
    this.lastAnsweredLayer = layer;
    if (layer !== this.lastLayer || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    setImmediate(() => setImmediate(() => waiters.forEach((resume) => resume())));
  }

  /**
   * Resolves at the next step's end: `'step-end'`; at once when the shard is idle (`'idle'`) or a step
   * has just ended (`'step-end'`: consecutive waits, e.g. a load's last graph and its record, share
   * one quiet part); after maxWaitMs at the latest (`'timeout'`).
   */
  next(): Promise<'step-end' | 'idle' | 'timeout'> {
    const since = this.now() - this.lastAnsweredAt;
    if (since > this.idleMs) return Promise.resolve('idle');
    if (this.lastAnsweredLayer === this.lastLayer && since < this.stillQuietMs) return Promise.resolve('step-end');
    return this.nextEnd();
  }

  /**
   * Resolves at the `count`-th step end from now, not counting one that has just ended (which `next` shares):
   * work several shards would start at one step end then starts `count` steps later. At once when the shard is
   * idle; each step waited for at most maxWaitMs.
   */
  async later(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      if (this.now() - this.lastAnsweredAt > this.idleMs) return;
      await this.nextEnd();
    }
  }

  private nextEnd(): Promise<'step-end' | 'timeout'> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== resume);
        resolve('timeout');
      }, this.maxWaitMs);
      const resume = (): void => {
        clearTimeout(timer);
        resolve('step-end');
      };
      this.waiters.push(resume);
    });
  }
}
