/**
 * How a watcher takes registry changes: `pace` resolves when this process may do the work a change
 * brings (parsing it, validating it, and the listener's own work). A serving shard passes the end of
 * the router's step (StepEnds): a plan or record change reaches every process on a host at one
 * instant, and each parsing and acting on it at once piles their CPU onto the expert calls in flight.
 * Changes that arrive while a delivery waits are coalesced: the listener then sees the newest state once.
 */
export interface WatchOptions {
  readonly pace?: () => Promise<unknown>;
}

/**
 * `deliver` run once per burst of `notify()` calls: after `pace()` resolves when given (notifications
 * meanwhile join the delivery already waiting), else in a microtask (changes that arrive together
 * reach the listener once). `deliver` reads the newest state itself. A pace that rejects delivers anyway;
 * what `deliver` throws is reported (a value the listener cannot use), and the watch goes on.
 */
export function coalescedDelivery(deliver: () => void, pace: (() => Promise<unknown>) | undefined): () => void {
  let queued = false;
  const run = (): void => {
    queued = false;
    try {
      deliver();
    } catch (e) {
      process.stderr.write(`expertmesh: registry watch: ${(e as Error).message.slice(0, 300)}\n`);
    }
  };
  return () => {
    if (queued) return;
    queued = true;
    if (pace) void pace().then(run, run);
    else queueMicrotask(run);
  };
}

/**
 * `listener` called only as `pace` allows, with the newest arguments of the calls meanwhile (for
 * registries whose changes arrive parsed already); `listener` itself when there is no pace.
 */
export function pacedListener<A extends unknown[]>(listener: (...args: A) => void, pace: (() => Promise<unknown>) | undefined): (...args: A) => void {
  if (!pace) return listener;
  let newest: A | null = null;
  const deliver = coalescedDelivery(() => {
    const args = newest;
    newest = null;
    if (args) listener(...args);
  }, pace);
  return (...args) => {
    newest = args;
    deliver();
  };
}
