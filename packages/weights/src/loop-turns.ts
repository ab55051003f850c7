/**
 * Widening and quantising work on a real-width tensor (DeepSeek-R1's LM head or embedding table: 926M values, ~15 s
 * to widen from BF16 on this machine) is done by chunks of about this many values, with a turn of the event loop
 * between them, so that a loading process keeps answering its sockets and timers (health checks, keep-alives,
 * registry leases) instead of holding its thread for the whole tensor.
 */
export const CHUNK_VALUES = 1 << 22;

/** One turn of the event loop (timers and I/O run; a few µs when idle). */
export const loopTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Calls `work(start, end)` over [0, n) by runs of `step`, with a loop turn between runs. */
export async function byChunks(n: number, step: number, work: (start: number, end: number) => void): Promise<void> {
  for (let start = 0; start < n; start += step) {
    if (start > 0) await loopTurn();
    work(start, Math.min(n, start + step));
  }
}
