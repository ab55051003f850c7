/** Resolves after the event loop has turned `n` times (each turn runs the poll and check phases). */
function afterLoopTurns(n: number): Promise<void> {
  return n <= 0 ? Promise.resolve() : new Promise<void>((resolve) => setImmediate(() => void afterLoopTurns(n - 1).then(resolve)));
}

/**
 * One compute at a time, in arrival order. onnxruntime runs a session on the event loop's thread,
 * so a compute scheduled right behind another runs before the first one's answer has left: the
 * HTTP/2 write is flushed in a later turn of the loop, after the second compute. With two
 * micro-batches in flight that held the first micro-batch's answer for a whole compute (10–18 ms
 * in the pinned benchmark's trace). A turn ends only once its work has settled, the caller's
 * continuation has handed the answer to the transport (it runs first, as a microtask), and the loop
 * has turned twice, so the write is on the socket before the next compute blocks the loop.
 */
export class ComputeTurns {
  private tail: Promise<void> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const before = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => (release = resolve));
    const result = before.then(work);
    const done = (): void => void afterLoopTurns(2).then(release);
    result.then(done, done);
    return result;
  }
}
