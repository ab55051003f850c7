import { ExpertKernelNotBuiltError, loadAddon } from './native-expert-program.js';

/** glibc's malloc counters (mallinfo2, all arenas) and the process's resident bytes. */
export interface MallocHeapStats {
  /** false when another allocator (a preloaded jemalloc) serves malloc: the counters below are then absent. */
  readonly glibc: boolean;
  /** Bytes of glibc's heaps (main heap and thread arenas), in use or free. */
  readonly heapBytes?: number;
  /** Bytes of blocks glibc gave mappings of their own (above its mmap threshold). */
  readonly mappedBytes?: number;
  readonly inUseBytes?: number;
  /** Bytes free inside the heaps: what glibc holds for later mallocs, resident once touched. */
  readonly freeBytes?: number;
  /** Free bytes at the top of the main heap (what an ordinary trim would return). */
  readonly topFreeBytes?: number;
  readonly residentBytes: number;
}

/** What one malloc_trim(0) did. */
export interface HeapTrim {
  readonly glibc: boolean;
  /** glibc's answer: some memory was returned to the kernel. */
  readonly trimmed: boolean;
  /** Resident bytes before − after the call (another thread's allocations in between can only shrink it). */
  readonly releasedBytes: number;
  readonly microseconds: number;
}

/** What one V8 critical memory-pressure notification did (V8's young generation shrunk, its pooled pages freed). */
export interface V8HeapShrink {
  /** false where the node binary does not export V8's entry points: nothing was done. */
  readonly done: boolean;
  /** Resident bytes before − after the call. */
  readonly releasedBytes: number;
  readonly microseconds: number;
}

/** What an idle return did: V8's heap shrunk first (its garbage freed, then glibc's pages handed back). */
export interface IdleMemoryReturn extends HeapTrim {
  /** null where the addon was built before this call existed (a stale build). */
  readonly v8: V8HeapShrink | null;
}

interface MallocAddon {
  mallocStats(): MallocHeapStats;
  mallocTrim(): HeapTrim;
  /** Absent from an addon built before it (a stale build): the idle return then trims only. */
  v8HeapShrink?(): V8HeapShrink;
}

/** The addon's malloc entry points, or null where it is not built (the engine then runs without trimming). */
function mallocAddon(): MallocAddon | null {
  try {
    return loadAddon() as unknown as MallocAddon;
  } catch (error) {
    if (error instanceof ExpertKernelNotBuiltError) return null;
    throw error;
  }
}

/** glibc's heap counters now; null where the native addon is not built. */
export function mallocHeapStats(): MallocHeapStats | null {
  return mallocAddon()?.mallocStats() ?? null;
}

/** `EXPERTMESH_HEAP_RETURN=off` turns every heap return off (`on`, the default, or unset: on); other values are refused. */
export function heapReturnEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.EXPERTMESH_HEAP_RETURN ?? 'on';
  if (value !== 'on' && value !== 'off') throw new RangeError(`EXPERTMESH_HEAP_RETURN must be on or off, got "${value}"`);
  return value === 'on';
}

/**
 * Hands the free pages inside glibc's heaps back to the kernel (malloc_trim(0): every arena, not only the
 * top). glibc keeps what was freed — a load's temporaries, a long prefill's activations — resident for
 * later mallocs; after a load, or when the engine falls idle, nothing needs it soon. It walks every free
 * block and costs page faults when the memory is used again, so it never runs between two steps of work.
 * null where the native addon is not built, or where EXPERTMESH_HEAP_RETURN=off.
 */
export function returnFreedHeap(): HeapTrim | null {
  if (!heapReturnEnabled()) return null;
  return mallocAddon()?.mallocTrim() ?? null;
}

/**
 * What a process holds beyond its weights while idle, handed back: V8's critical memory-pressure notification
 * (a full collection that also shrinks V8's young generation, whose two semi-spaces grow to 16 MiB each while
 * modules load or a burst allocates and then stay resident, and frees its pooled pages; ~25 ms here), then
 * malloc_trim(0) (returnFreedHeap). Only where nothing runs: after a start-up load, or when a server falls
 * idle; never between steps, nor in a serving shard's re-plan (returnFreedHeap alone there).
 * null where the native addon is not built, or where EXPERTMESH_HEAP_RETURN=off.
 */
export function returnIdleMemory(): IdleMemoryReturn | null {
  if (!heapReturnEnabled()) return null;
  const addon = mallocAddon();
  if (!addon) return null;
  const v8 = addon.v8HeapShrink?.() ?? null;
  const trim = addon.mallocTrim();
  return { ...trim, releasedBytes: trim.releasedBytes + (v8?.releasedBytes ?? 0), microseconds: trim.microseconds + (v8?.microseconds ?? 0), v8 };
}

/**
 * Returns idle memory (returnIdleMemory) once a server has been idle for `idleMs` after some work: a long prefill's
 * activations (onnxruntime frees them; glibc keeps their pages) and V8's grown young generation go back to the
 * kernel between bursts of requests, never
 * between two steps or calls (the trim walks every free block, and the next large allocation faults its pages
 * in again). `workDone()` after each step or call; `isBusy()` is asked when the time is up.
 */
export class IdleHeapReturn {
  private timer: NodeJS.Timeout | null = null;
  private worked = false;
  private stopped = false;
  /** Idle returns done, and what the last one gave back (null: none yet, the addon is not built, or the return is off). */
  returns = 0;
  last: IdleMemoryReturn | null = null;

  constructor(
    private readonly idleMs: number,
    private readonly isBusy: () => boolean,
    /** Sees each return done (for a metric). */
    private readonly onReturn: () => void = () => undefined,
  ) {}

  /** Whether work was done since the last return: a return is owed once the process has been idle for `idleMs`. */
  get owed(): boolean {
    return this.worked && !this.stopped;
  }

  workDone(): void {
    this.worked = true;
    if (this.idleMs <= 0 || this.stopped) return;
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.fire(), this.idleMs).unref();
  }

  /** For good: work done afterwards arms no return (a process about to exit gives everything back anyway). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private fire(): void {
    this.timer = null;
    if (!this.worked) return;
    if (this.isBusy()) return this.workDone();
    this.worked = false;
    this.last = returnIdleMemory();
    this.returns++;
    this.onReturn();
  }
}
