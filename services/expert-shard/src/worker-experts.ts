import { Worker } from 'node:worker_threads';
import { status } from '@grpc/grpc-js';
import type { FromWorker, ToWorker, WorkerLoad, WorkerStart } from './expert-worker-protocol.js';
import { ShardRequestError } from './shard-request-error.js';
import type { ExpertPairs, HeldExperts } from './held-experts.js';

/** The expert worker thread died (an uncaught error, out of memory, terminated): its calls cannot be answered here. */
export class ExpertWorkerCrashedError extends ShardRequestError {
  override readonly name = 'ExpertWorkerCrashedError';
  constructor(reason: string) {
    super(status.UNAVAILABLE, `this shard's expert worker thread stopped (${reason}): the shard is going down, send to another holder`);
  }
}

/** A set of experts could not be loaded in its worker (a corrupt checkpoint, too little memory). */
export class ExpertLoadError extends Error {
  override readonly name = 'ExpertLoadError';
}

/** How long closing waits for a worker to release its sessions before it is terminated. */
const CLOSE_BOUND_MS = 5_000;

/** Run from TypeScript sources (through tsx, or vitest), the worker's entry registers tsx before it imports the thread's module. */
const FROM_SOURCES = import.meta.url.endsWith('.ts');
const WORKER_ENTRY = new URL('./expert-worker-boot.mjs', import.meta.url);
const TS_ENTRY = new URL('./expert-worker-thread.ts', import.meta.url).href;

function spawn(warmNice: number): Worker {
  const start: WorkerStart = { warmNice, ...(FROM_SOURCES ? { tsEntry: TS_ENTRY } : {}) };
  const worker = new Worker(WORKER_ENTRY, { workerData: start, stdout: false, stderr: false });
  worker.unref(); // the shard's own life decides when the process ends; closing ends the thread
  return worker;
}

/** At most one idle worker, started ahead of the next load. */
class SpareWorker {
  private spare: Worker | null = null;

  /** The spare (a new worker when there is none, or it died). */
  take(warmNice: number): Worker {
    const worker = this.spare ?? spawn(warmNice);
    this.spare = null;
    return worker;
  }

  /** Starts a spare in the background if there is none. */
  prepare(warmNice: number): void {
    if (this.spare) return;
    const worker = spawn(warmNice);
    worker.once('exit', () => {
      if (this.spare === worker) this.spare = null;
    });
    worker.on('error', () => undefined); // a spare that fails is replaced when taken (take() sees it gone)
    this.spare = worker;
  }

  async close(): Promise<void> {
    const worker = this.spare;
    this.spare = null;
    if (worker) await worker.terminate();
  }
}

const spares = new SpareWorker();

/** A copy of `a` in a buffer of its own, unless it already covers one whole: what can be transferred, not cloned whole. */
function own<T extends Float32Array | Int32Array>(a: T): T {
  return (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : a.slice()) as T;
}

/**
 * One set of experts (a placement plan's share of this shard) held and run by a worker thread of its
 * own: the set is built there (onnxruntime-node creates a session on the calling thread, so the
 * thread that answers the router never builds a graph), and each call's rows go there and back as
 * transferred buffers. A new plan's set is a new worker; the switch changes which worker is asked.
 */
export class WorkerExperts implements HeldExperts {
  private readonly pending = new Map<number, { resolve: (out: Float32Array) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private crashed: ExpertWorkerCrashedError | null = null;
  private closing: Promise<void> | null = null;
  private readonly crashListeners: ((e: ExpertWorkerCrashedError) => void)[] = [];
  private readonly byLayer: Map<number, { experts: readonly number[]; set: ReadonlySet<number> }>;
  /** Resolves when the thread has exited (at once for a set with no experts, which has none). */
  readonly exited: Promise<void>;

  private constructor(
    /** The thread (null: a set with no experts needs none). Exposed for tests that stop it. */
    readonly worker: Worker | null,
    layers: readonly { layer: number; experts: readonly number[] }[],
    readonly weightBytes: number,
    readonly weightFormat: string,
  ) {
    this.byLayer = new Map(layers.filter((l) => l.experts.length > 0).map((l) => [l.layer, { experts: [...l.experts].sort((a, b) => a - b), set: new Set(l.experts) }]));
    this.exited = worker ? new Promise((resolve) => worker.once('exit', () => resolve())) : Promise.resolve();
    if (!worker) return;
    worker.on('message', (msg: FromWorker) => {
      if (msg.op !== 'ran' && msg.op !== 'run-failed') return;
      const call = this.pending.get(msg.id);
      if (!call) return;
      this.pending.delete(msg.id);
      if (msg.op === 'ran') call.resolve(msg.out);
      else call.reject(Object.assign(new Error(msg.message), { name: msg.name }));
    });
    worker.on('error', (e) => this.fail(`${e.name}: ${e.message}`));
    worker.on('exit', (code) => {
      if (!this.closing) return this.fail(`exit code ${code}`);
      // Terminated while closing (it did not finish its calls within the bound): they fail, nothing waits on them.
      for (const call of this.pending.values()) call.reject(new ExpertWorkerCrashedError(`terminated while closing, exit code ${code}`));
      this.pending.clear();
    });
  }

  /** Starts a worker that loads `load.layers`; resolves once they are built and can run. */
  /**
   * Loads `load.layers` in a worker (the spare, when one is ready: see prepareSpare); resolves once
   * they are built and can run.
   */
  static async start(load: WorkerLoad): Promise<WorkerExperts> {
    if (load.layers.every((l) => l.experts.length === 0)) return new WorkerExperts(null, [], 0, 'none');
    const worker = spares.take(load.loadNice);
    worker.postMessage({ op: 'load', load } satisfies ToWorker);
    const loaded = await new Promise<Extract<FromWorker, { op: 'loaded' }>>((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.op === 'loaded') done(() => resolve(msg));
        else if (msg.op === 'load-failed') done(() => reject(new ExpertLoadError(`loading experts in a worker thread failed: ${msg.message}`)));
      };
      const onError = (e: Error): void => done(() => reject(new ExpertLoadError(`the expert worker thread failed while loading: ${e.message}`)));
      const onExit = (code: number): void => done(() => reject(new ExpertLoadError(`the expert worker thread exited (code ${code}) while loading`)));
      const done = (settle: () => void): void => {
        worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        settle();
      };
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    }).catch(async (e: Error) => {
      await worker.terminate();
      throw e;
    });
    return new WorkerExperts(worker, loaded.layers, loaded.weightBytes, loaded.weightFormat);
  }

  /**
   * Starts a spare worker in the background, if there is none, for the next load to take: called once
   * a switch is over (the old set released), so that its start-up falls in a quiet moment.
   */
  static prepareSpare(warmNice: number): void {
    spares.prepare(warmNice);
  }

  /** Ends the spare worker (shutdown): with the sets closed, no thread of the shard's remains. */
  static closeSpare(): Promise<void> {
    return spares.close();
  }

  /** Called once if the thread dies while this set is open. */
  onCrash(listener: (e: ExpertWorkerCrashedError) => void): void {
    this.crashListeners.push(listener);
  }

  holds(layer: number, expert: number): boolean {
    return this.byLayer.get(layer)?.set.has(expert) ?? false;
  }

  heldExperts(layer: number): readonly number[] {
    return this.byLayer.get(layer)?.experts ?? [];
  }

  heldLayers(): { layer: number; experts: readonly number[] }[] {
    return [...this.byLayer].map(([layer, l]) => ({ layer, experts: l.experts }));
  }

  /**
   * The weighted sums, computed in the worker. `hiddenIsOwned`: the caller no longer needs `hidden`,
   * whose buffer then moves to the worker instead of being copied.
   */
  computePairs(layer: number, hidden: Float32Array, numTokens: number, pairs: ExpertPairs, hiddenIsOwned = false): Promise<Float32Array> {
    if (this.crashed) return Promise.reject(this.crashed);
    if (this.closing || !this.worker) return Promise.reject(new ShardRequestError(status.UNAVAILABLE, 'this set of experts is closed: send to another holder'));
    const id = this.nextId++;
    const sent = hiddenIsOwned ? own(hidden) : hidden.slice();
    const msg: ToWorker = { op: 'run', id, layer, rows: numTokens, hidden: sent, tokenRows: Int32Array.from(pairs.tokenRows), expertIds: Int32Array.from(pairs.expertIds), weights: Float32Array.from(pairs.weights) };
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker!.postMessage(msg, [sent.buffer as ArrayBuffer, msg.tokenRows.buffer as ArrayBuffer, msg.expertIds.buffer as ArrayBuffer, msg.weights.buffer as ArrayBuffer]);
    });
  }

  /** Ends the thread (its sessions with it); calls already sent are answered first. `keep` is for sets that share graphs: none here. */
  close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return Promise.resolve();
    this.closing ??= (async () => {
      const bound = setTimeout(() => void worker.terminate(), CLOSE_BOUND_MS);
      await Promise.allSettled([...this.pending.values()].map((c) => new Promise<void>((r) => ((c.resolve = wrap(c.resolve, r)), (c.reject = wrap(c.reject, r))))));
      worker.postMessage({ op: 'close' } satisfies ToWorker);
      await this.exited;
      clearTimeout(bound);
    })();
    return this.closing;
  }

  private fail(reason: string): void {
    if (this.crashed) return;
    this.crashed = new ExpertWorkerCrashedError(reason);
    for (const call of this.pending.values()) call.reject(this.crashed);
    this.pending.clear();
    for (const listener of this.crashListeners) listener(this.crashed);
  }
}

function wrap<A>(f: (a: A) => void, after: () => void): (a: A) => void {
  return (a) => {
    f(a);
    after();
  };
}
