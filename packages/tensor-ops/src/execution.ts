import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as ort from 'onnxruntime-node';
import type { BuiltModel, GraphOptimization } from './onnx-model-builder.js';

/** Where onnxruntime runs the graphs: the bundled CPU build here, CUDA on GPU nodes. */
export type ExecutionProvider = 'cpu' | 'cuda';

export interface ExecutionOptions {
  readonly executionProvider: ExecutionProvider;
  /** Threads for one operator; 0 lets onnxruntime pick (one per core). */
  readonly intraOpThreads: number;
  /**
   * Whether a session's intra-op threads spin between its operators while it runs ('run', the default) or
   * sleep ('off'). Spinning saves a thread wake-up per parallel operator; on a host whose other cores are
   * busy with other processes (shards beside a router), the spinning thread takes a core from them.
   */
  readonly intraOpSpin?: IntraOpSpin;
  /**
   * What runs the routed experts: onnxruntime's graphs ('onnxruntime'), the native grouped kernel of
   * packages/expert-kernel ('native', float32 and int8/int4 experts, `npm run build:native`), or 'auto' (the
   * default, also when absent): native when the addon is built and runs the experts' format, else onnxruntime.
   */
  readonly expertKernel?: ExpertKernel;
  /**
   * What runs the model's own vocabulary product (the LM head), as --expert-kernel asked for it, before the experts'
   * format decided `expertKernel`: with 'auto' a head the native kernel can run (float32 values, int8/int4 codes, or
   * bfloat16 as stored) runs there even when the experts stay in onnxruntime's graphs. Absent: `expertKernel`.
   */
  readonly productKernel?: ExpertKernel;
}

export const EXPERT_KERNELS = ['auto', 'onnxruntime', 'native'] as const;
export type ExpertKernel = (typeof EXPERT_KERNELS)[number];

export const INTRA_OP_SPIN = ['run', 'off'] as const;
export type IntraOpSpin = (typeof INTRA_OP_SPIN)[number];

export const DEFAULT_EXECUTION: ExecutionOptions = { executionProvider: 'cpu', intraOpThreads: 0 };

export class GraphRuntimeError extends Error {
  override readonly name = 'GraphRuntimeError';
  constructor(
    message: string,
    readonly graph: string,
    options?: { cause?: unknown },
  ) {
    super(`graph "${graph}": ${message}`, options);
  }
}

/** onnxruntime's options for one of our sessions (exported for its test). */
export function sessionOptions(options: ExecutionOptions, externalFolder: string | null, optimization: GraphOptimization = 'all'): ort.InferenceSession.SessionOptions {
  return {
    // Warnings would name every overridable initializer (each stored weight is one, on purpose).
    logSeverityLevel: 3,
    executionProviders: options.executionProvider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    intraOpNumThreads: options.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: optimization,
    // Each of the engine's dozens of sessions would keep its own arena at the peak of its largest run
    // (a 1024-token prefill) for the life of the process: measured on the demo preset, resident memory
    // after a batch-32 prefill 599 → 406 MiB (int8) and 741 → 578 MiB (float32) without, at the same speed.
    enableCpuMemArena: false,
    // Memory patterns plan one block per input shape, and the engine's shapes change every step (sequence
    // lengths): measured on the demo and bench presets, 1–7 % less resident after the bench runs without, never
    // more, at the same prefill and decode speed (docs/benchmarks.md, "Where the rest goes").
    enableMemPattern: false,
    // The engine owns dozens of sessions that run one after another. Spinning thread pools of idle
    // sessions would steal the cores from the running one (measured: 40x slower with spinning left on),
    // while a pool that never spins wakes its threads for every parallel operator (~40 µs each here, where
    // a 1 MB int8 product takes ~100). So a session's threads spin during its runs only: onnxruntime turns
    // spinning on when a run starts and, with force_spinning_stop, off when it ends (measured on the
    // bench preset, int8 decode at batch 8: 151 → 185 tokens/s; docs/benchmarks.md).
    // External data (weights left in the checkpoint's files) resolves against this folder; onnxruntime
    // maps those ranges into memory instead of copying them.
    extra: {
      session: {
        intra_op: { allow_spinning: options.intraOpSpin === 'off' ? '0' : '1' },
        force_spinning_stop: '1',
        inter_op: { allow_spinning: '0' },
        ...(externalFolder ? { model_external_initializers_file_folder_path: externalFolder } : {}),
      },
    },
  };
}

/**
 * onnxruntime-node runs a session on the calling thread, so the event loop (sockets, gRPC keepalive
 * pings, timers) waits for every run; and consecutive awaited runs never return to it. After runs
 * that took more than this since the loop last had a turn, give it one (a few µs when idle).
 */
const YIELD_AFTER_MS = 50;
let loopTurnAt = performance.now();
async function yieldAfterLongWork(): Promise<void> {
  if (performance.now() - loopTurnAt < YIELD_AFTER_MS) return;
  await new Promise<void>((resolve) => setImmediate(resolve));
  loopTurnAt = performance.now();
}

/** One compiled graph with named inputs and outputs. */
export class Graph {
  private constructor(
    readonly name: string,
    private readonly session: ort.InferenceSession,
    /** Float32 weights fed at every run (over the caller's arrays: no copy). */
    private readonly weightFeeds: Readonly<Record<string, ort.Tensor>>,
  ) {}

  static async create(name: string, model: Uint8Array | BuiltModel, options: ExecutionOptions = DEFAULT_EXECUTION): Promise<Graph> {
    const built: BuiltModel = model instanceof Uint8Array ? { bytes: model, externalFolder: null, fedWeights: {} } : model;
    const weightFeeds = Object.fromEntries(Object.entries(built.fedWeights).map(([k, w]) => [k, new ort.Tensor('float32', w.data, w.dims)]));
    try {
      return new Graph(name, await ort.InferenceSession.create(built.bytes, sessionOptions(options, built.externalFolder, built.optimization)), weightFeeds);
    } catch (cause) {
      throw new GraphRuntimeError(`onnxruntime could not load it: ${(cause as Error).message}`, name, { cause });
    }
  }

  async run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    try {
      const out = (await this.session.run({ ...this.weightFeeds, ...feeds })) as Record<string, ort.Tensor>;
      await yieldAfterLongWork();
      return out;
    } catch (cause) {
      throw new GraphRuntimeError(`run failed: ${(cause as Error).message}`, this.name, { cause });
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function f32(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function i32(data: Int32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int32', data, dims);
}

export function i64(data: BigInt64Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int64', data, dims);
}

/** The float32 data of an output tensor (onnxruntime-node hands back a fresh array). */
export function floatData(tensor: ort.Tensor | undefined, graph: string, output: string): Float32Array {
  if (!tensor || !(tensor.data instanceof Float32Array)) {
    throw new GraphRuntimeError(`output "${output}" is missing or not float32`, graph);
  }
  return tensor.data;
}

/** The int32 data of an output tensor. */
export function int32Data(tensor: ort.Tensor | undefined, graph: string, output: string): Int32Array {
  if (!tensor || !(tensor.data instanceof Int32Array)) {
    throw new GraphRuntimeError(`output "${output}" is missing or not int32`, graph);
  }
  return tensor.data;
}

export type { Tensor } from 'onnxruntime-node';

let collectGarbage: (() => void) | null = null;

/**
 * Frees the buffers a load leaves behind: each weight's JavaScript copy and the ONNX model bytes that
 * carried it into onnxruntime (which keeps its own, pre-packed, copy). They are garbage once a session
 * exists, but V8 collects them only when it next needs to, so until then the process holds every weight
 * two or three times (measured on the demo preset in float32: 855 MiB resident after load, 471 MiB
 * after this). One full collection after a load, the point where they all become garbage at once.
 */
export async function releaseLoadBuffers(): Promise<void> {
  await new Promise<void>((resolve) => setTimeout(resolve, 0)); // onnxruntime's create() holds its input until its promise settles
  if (!collectGarbage) {
    setFlagsFromString('--expose-gc');
    collectGarbage = runInNewContext('gc') as () => void;
  }
  // Twice: buffers onnxruntime-node referenced are released by the first collection's weak callbacks.
  collectGarbage();
  await new Promise<void>((resolve) => setImmediate(resolve));
  collectGarbage();
}
