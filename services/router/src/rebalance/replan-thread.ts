import { Worker } from 'node:worker_threads';
import { RUNS_COMPILED } from '@expertmesh/process-lifecycle';
import type { LoadReplanInput, LoadReplanOutput } from './load-replan.js';

/** A re-plan was asked while one still runs: the thread plans one at a time (the caller skips this look). */
export class ReplanBusyError extends Error {
  override readonly name = 'ReplanBusyError';
}

/** The planner failed or its thread stopped; `name` is the planner's own error's (e.g. PlacementPlanError). */
export class ReplanThreadError extends Error {
  constructor(message: string, override readonly name: string = 'ReplanThreadError') {
    super(message);
  }
}

/**
 * The planner thread's nice value: the lowest priority. It plans a few ms of CPU once in a while, and a plan
 * may wait; the router's serving threads on the same core may not (round 14: its step in flight ran ~20 ms
 * longer while the check planned).
 */
export const REPLAN_NICE = 19;

/** The planner thread as the kernel sees it (Linux): its id and the nice value it lowered itself to. */
export interface ReplanThreadIdentity {
  readonly tid: number;
  readonly nice: number;
}

interface Ready {
  readonly ready: true;
  readonly tid: number | null;
  readonly nice: number | null;
}

interface Reply {
  readonly id: number;
  readonly output?: LoadReplanOutput;
  readonly error?: { readonly name: string; readonly message: string };
}

/**
 * The closed loop's planner in a worker thread of its own: planning 64 experts × layers for every
 * shard takes milliseconds of CPU (tens when its code is still cold), which on the router's serving
 * thread hold a decode step. One plan at a time; the worker starts with the loop (or on first use),
 * holds the process only while a plan is being made, and stops on close.
 */
export class ReplanThread {
  private worker: Worker | null = null;
  private ready: Promise<Worker> | null = null;
  private pending: { readonly id: number; readonly resolve: (o: LoadReplanOutput) => void; readonly reject: (e: Error) => void } | null = null;
  private nextId = 1;
  private closed = false;
  private identity: ReplanThreadIdentity | null = null;
  /** Plans the thread has answered (a failed one not counted). */
  plansMade = 0;

  /** `nice`: the planner thread's priority, lowered to it (never raised) before it plans anything. */
  constructor(private readonly nice: number = REPLAN_NICE) {}

  /** The running thread's kernel id and nice value as it reported them when ready; null before, or where threads have none (not Linux). */
  get thread(): ReplanThreadIdentity | null {
    return this.identity;
  }

  /** True while a plan is being made. */
  get busy(): boolean {
    return this.pending !== null;
  }

  /** Starts the worker now (so the first re-plan does not wait for it); idempotent. */
  start(): Promise<Worker> {
    if (this.closed) return Promise.reject(new ReplanThreadError('the re-plan thread is closed'));
    this.ready ??= new Promise<Worker>((resolve, reject) => {
      // From the sources the worker runs TypeScript through tsx (its boot file registers it); the compiled build has
      // the worker's module, plain JavaScript, beside this one.
      const entry = RUNS_COMPILED ? './replan-worker.mjs' : './replan-worker-boot.mjs';
      const worker = new Worker(new URL(entry, import.meta.url), { workerData: { nice: this.nice } });
      this.worker = worker;
      worker.once('message', (m: Ready) => {
        this.identity = m.tid !== null && m.nice !== null ? { tid: m.tid, nice: m.nice } : null;
        // Idle, it never keeps the process alive (unref'd after the listeners: a 'message' listener refs its port).
        if (!this.pending) worker.unref();
        resolve(worker);
      });
      worker.on('message', (m: Reply) => this.settle(m));
      worker.on('error', (e) => {
        reject(e);
        this.fail(new ReplanThreadError(`the re-plan thread failed: ${e.message}`));
      });
      worker.on('exit', (code) => {
        reject(new ReplanThreadError(`the re-plan thread stopped (exit code ${code}) before it was ready`));
        this.fail(new ReplanThreadError(`the re-plan thread stopped (exit code ${code})`));
        // A thread that died is started again on the next use.
        if (this.worker === worker) (this.worker = null), (this.ready = null), (this.identity = null);
      });
    });
    return this.ready;
  }

  /** The re-plan for `input`, made in the worker; rejects with ReplanBusyError while another runs. */
  async plan(input: LoadReplanInput): Promise<LoadReplanOutput> {
    if (this.pending) throw new ReplanBusyError('a re-plan is already running');
    const id = this.nextId++;
    const done = new Promise<LoadReplanOutput>((resolve, reject) => (this.pending = { id, resolve, reject }));
    try {
      const worker = await this.start();
      // A plan being made holds the process until it is answered (or the thread stops).
      worker.ref();
      worker.postMessage({ id, input });
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
    return done;
  }

  /** Stops the worker (a plan still running is rejected); the thread is not started again. */
  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = null;
    if (worker) await worker.terminate();
  }

  private settle(m: Reply): void {
    const p = this.pending;
    if (!p || m.id !== p.id) return;
    this.pending = null;
    this.worker?.unref();
    if (m.output) {
      this.plansMade++;
      p.resolve(m.output);
    } else p.reject(new ReplanThreadError(m.error?.message ?? 'the re-plan thread answered nothing', m.error?.name));
  }

  private fail(e: Error): void {
    const p = this.pending;
    this.pending = null;
    this.worker?.unref();
    p?.reject(e);
  }
}
