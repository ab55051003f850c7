import { setFlagsFromString } from 'node:v8';

/**
 * How much V8 lets the router's old generation grow past what its last full collection kept, in percent.
 *
 * Why (docs/benchmarks.md, issue 16 "The router's heap under minutes of load (round 13)"): the router's heap is
 * flat under load (~85 MB live: the tokenizer's tables, code), nothing leaks. But once V8 has done its first full
 * collection under load (~100 s in; a forced one, a heap snapshot, set it off at once), it sizes the next limit
 * from its own GC speed against the rate the old generation fills; that rate is low here, so it leaves ~10 % of the
 * live heap as headroom, less than the young generation's capacity (up to 16 MB), and V8 starts marking whenever
 * old-space headroom is below that: a full collection (~20 ms each, 2–3 a second) then replaces every scavenge, for
 * good. A fixed 50 % (~40 MB here) keeps the headroom above the young generation's capacity, so full collections
 * are rare again; it costs at most that much more heap between them.
 */
export const ROUTER_HEAP_GROWING_PERCENT = 50;

/** The Node flag that sets it; a user's own (`node --heap-growing-percent=N …`; Node refuses it in NODE_OPTIONS) wins. */
const FLAG = '--heap-growing-percent';

export class HeapGrowthError extends Error {
  override readonly name = 'HeapGrowthError';
}

/** Whether the process was started with its own heap growing percent (`node --heap-growing-percent=N …`). */
export function heapGrowthGivenByUser(execArgv: readonly string[] = process.execArgv): boolean {
  // Node takes V8's flags with dashes or underscores.
  return execArgv.some((arg) => {
    const a = `--${arg.replace(/^--/, '').replaceAll('_', '-')}`;
    return a === FLAG || a.startsWith(`${FLAG}=`);
  });
}

/**
 * Sets V8's old-generation growing factor to 1 + percent / 100 for the rest of the process (0 gives V8 its own
 * dynamic factor back). V8 reads it whenever it recomputes its limits after a full collection, so it takes
 * effect from the next one. Returns false (nothing set) when the user gave the flag to Node.
 */
export function setHeapGrowth(percent: number = ROUTER_HEAP_GROWING_PERCENT, givenByUser: boolean = heapGrowthGivenByUser()): boolean {
  if (!Number.isInteger(percent) || percent < 0 || percent > 300) throw new HeapGrowthError(`the heap growing percent takes an integer 0 … 300, not ${percent}`);
  if (givenByUser) return false;
  setFlagsFromString(`${FLAG}=${percent}`);
  return true;
}
