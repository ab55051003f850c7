import { setTimeout as sleep } from 'node:timers/promises';
import type { Engine, GenerationRequest, Sequence, TokenLogprobs } from '@expertmesh/engine';
import { IdleHeapReturn, type IdleMemoryReturn } from '@expertmesh/expert-kernel';

/** What a request sees after each step: its new tokens, and the finish reason once done. */
export interface GenerationEvent {
  readonly tokenIds: readonly number[];
  readonly logprobs: readonly TokenLogprobs[];
  readonly finishReason: 'stop' | 'length' | 'abort' | null;
  /** Prompt tokens found in the prefix cache (known once the request is first scheduled). */
  readonly cachedPromptTokens: number | null;
}

export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
  constructor(readonly retryAfterSeconds: number) {
    super('the server is at capacity: too many requests are waiting; retry later');
  }
}

/** The engine failed a step repeatedly (e.g. experts without a live holder); the request cannot go on. */
export class EngineUnavailableError extends Error {
  override readonly name = 'EngineUnavailableError';
}

/** One request's output as an async stream of events. */
export class GenerationStream implements AsyncIterable<GenerationEvent> {
  private readonly queue: (GenerationEvent | Error)[] = [];
  private wake: (() => void) | null = null;
  private done = false;
  emitted = 0;

  constructor(
    readonly sequence: Sequence,
    private readonly onAbort: (s: GenerationStream) => void,
  ) {}

  push(event: GenerationEvent | Error): void {
    this.queue.push(event);
    this.wake?.();
    this.wake = null;
  }

  /** Stops generating (client gone, stop string found): frees the sequence's cache at once. */
  abort(): void {
    if (!this.done) this.onAbort(this);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    while (true) {
      if (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
      const item = this.queue.shift()!;
      if (item instanceof Error) throw item;
      yield item;
      if (item.finishReason !== null) {
        this.done = true;
        return;
      }
    }
  }
}

export interface EngineLoopOptions {
  /** Requests waiting for a batch slot at most; more get 429. */
  readonly maxWaiting: number;
  /** How long a failing step is retried before its requests fail (a shard may come back meanwhile). */
  readonly retryForMs: number;
  /** Sees the duration of every completed step. */
  readonly onStep?: (seconds: number) => void;
  /**
   * After this long without work (and after at least one step), the pages glibc keeps of freed activations (a
   * long prefill's) and V8's grown young generation go back to the kernel (returnIdleMemory); 0 never.
   * Default IDLE_HEAP_RETURN_MS.
   */
  readonly idleHeapReturnMs?: number;
}

/** Idle time before the loop returns freed heap pages: long enough that back-to-back requests never wait for it. */
export const IDLE_HEAP_RETURN_MS = 1000;

/**
 * Runs the engine's step loop in the background while there is work, and hands each request its
 * tokens as they come. A failed step changes nothing (the engine applies a step only when it
 * completes), so it is retried before its requests are failed.
 */
export class EngineLoop {
  private readonly streams = new Set<GenerationStream>();
  private looping = false;
  private stopping = false;
  stepsRun = 0;
  /** Steps that failed and were retried (shards restarting, plan changes). */
  stepFailures = 0;
  /** Ends the back-off after a failed step early (set while it lasts). */
  private endPause: (() => void) | null = null;
  private readonly heapReturn: IdleHeapReturn;

  constructor(
    readonly engine: Engine,
    private readonly options: EngineLoopOptions,
  ) {
    this.heapReturn = new IdleHeapReturn(options.idleHeapReturnMs ?? IDLE_HEAP_RETURN_MS, () => this.looping || this.engine.hasWork);
  }

  /** Idle heap returns done, and what the last one gave back (null: none yet, or the native addon is not built). */
  get heapReturns(): number {
    return this.heapReturn.returns;
  }

  get lastHeapReturn(): IdleMemoryReturn | null {
    return this.heapReturn.last;
  }

  /** Whether steps ran since the last idle heap return (one is owed once the loop has been idle long enough). */
  get heapReturnOwed(): boolean {
    return this.heapReturn.owed;
  }

  get waiting(): number {
    return this.engine.numWaiting;
  }

  /** Sequences in the running batch (their cache is reserved). */
  get running(): number {
    return this.engine.numRunning;
  }

  /** Requests with an open stream: running or waiting. */
  get active(): number {
    return this.streams.size;
  }

  /** Queues a request; throws QueueFullError when the queue is full, InvalidRequestError for bad requests. */
  submit(request: GenerationRequest): GenerationStream {
    if (this.engine.numWaiting >= this.options.maxWaiting) throw new QueueFullError(1);
    const seq = this.engine.submit(request);
    const stream = new GenerationStream(seq, (s) => this.abortStream(s));
    this.streams.add(stream);
    this.kick();
    return stream;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.heapReturn.stop();
    this.retryNow();
    while (this.looping) await sleep(5);
  }

  /**
   * Tries a failed step again now instead of at the end of its back-off: what it lacked (a holder of
   * some expert) may be there now. Nothing happens when no step is waiting.
   */
  retryNow(): void {
    this.endPause?.();
  }

  private abortStream(stream: GenerationStream): void {
    if (!this.streams.has(stream)) return;
    this.engine.abort(stream.sequence);
    this.streams.delete(stream);
    stream.push({ tokenIds: [], logprobs: [], finishReason: 'abort', cachedPromptTokens: stream.sequence.cachedPromptTokens });
  }

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      while (this.engine.hasWork && !this.stopping) {
        await this.stepWithRetries();
        this.publish();
        // Let HTTP handlers run between steps (new requests, disconnects).
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.looping = false;
    }
    if (this.engine.hasWork && !this.stopping) this.kick();
  }

  private async stepWithRetries(): Promise<void> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      try {
        const t0 = performance.now();
        await this.engine.step();
        this.options.onStep?.((performance.now() - t0) / 1000);
        this.stepsRun++;
        this.heapReturn.workDone();
        return;
      } catch (e) {
        if (Date.now() - started >= this.options.retryForMs || this.stopping) {
          this.failAll(new EngineUnavailableError(`generation failed for ${Date.now() - started} ms (${attempt + 1} attempts): ${(e as Error).message}`, { cause: e }));
          return;
        }
        this.stepFailures++;
        const pause = Math.min(2000, 50 * 2 ** attempt);
        // Every running stream waits meanwhile: say why (at most one line per pause).
        process.stderr.write(`[router] step failed (attempt ${attempt + 1}, retrying in ${pause} ms): ${(e as Error).message}\n`);
        await this.pauseBeforeRetry(pause);
      }
    }
  }

  /** Waits `ms`, or less if retryNow() is called meanwhile. */
  private pauseBeforeRetry(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const end = (): void => {
        clearTimeout(timer);
        this.endPause = null;
        resolve();
      };
      const timer = setTimeout(end, ms);
      this.endPause = end;
    });
  }

  private publish(): void {
    for (const stream of this.streams) {
      const seq = stream.sequence;
      const n = seq.outputTokenIds.length;
      if (n > stream.emitted || seq.isFinished) {
        stream.push({ tokenIds: seq.outputTokenIds.slice(stream.emitted), logprobs: seq.logprobs.slice(stream.emitted), finishReason: seq.finishReason, cachedPromptTokens: seq.cachedPromptTokens });
        stream.emitted = n;
      }
      if (seq.isFinished) this.streams.delete(stream);
    }
  }

  private failAll(error: Error): void {
    for (const stream of this.streams) {
      this.engine.abort(stream.sequence);
      stream.push(error);
    }
    this.streams.clear();
  }
}
