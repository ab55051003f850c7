import type { WeightDtype } from '@expertmesh/model-weights';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';

/** Messages between a shard's serving thread and one of its expert worker threads (structured clone). */

/** What a worker is started with: the nice level its idle start-up (compiling the load's modules) runs at. */
export interface WorkerStart {
  readonly warmNice: number;
  /** Set when the shard runs from TypeScript sources: the module expert-worker-boot.mjs imports after registering tsx. */
  readonly tsEntry?: string;
}

/** What a worker loads once: a set of experts, built on its own thread. */
export interface WorkerLoad {
  readonly modelDir: string;
  readonly execution: ExecutionOptions;
  readonly weightDtype: WeightDtype;
  /** Experts per MoE layer (layers not listed hold none). */
  readonly layers: readonly { layer: number; experts: readonly number[] }[];
  /** The load rests this many times as long as each graph took to build (restAfterBuild); 0: one turn. */
  readonly restFactor: number;
  /** Nice levels the worker's thread (and the onnxruntime threads it starts) is lowered by while it loads. */
  readonly loadNice: number;
  /**
   * For tests: the load stops (Atomics.wait) before it reads its first expert, with gate[0] set to 1,
   * until gate[0] is set to 2 and notified; a thread blocked like a long graph build.
   */
  readonly gate?: SharedArrayBuffer;
}

export type ToWorker =
  | { readonly op: 'load'; readonly load: WorkerLoad }
  | { readonly op: 'run'; readonly id: number; readonly layer: number; readonly rows: number; readonly hidden: Float32Array; readonly tokenRows: Int32Array; readonly expertIds: Int32Array; readonly weights: Float32Array }
  | { readonly op: 'close' };

export type FromWorker =
  | { readonly op: 'loaded'; readonly layers: { layer: number; experts: number[] }[]; readonly weightBytes: number; readonly weightFormat: string }
  | { readonly op: 'load-failed'; readonly message: string }
  | { readonly op: 'ran'; readonly id: number; readonly out: Float32Array }
  | { readonly op: 'run-failed'; readonly id: number; readonly name: string; readonly message: string }
  | { readonly op: 'closed' };
