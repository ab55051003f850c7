import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { installRoot } from '@expertmesh/process-lifecycle';
import type { SwigluWeights, WeightData } from '@expertmesh/tensor-ops';

/** The addon's entry points (native/expert_kernel.cc). */
export interface ExpertKernelAddon {
  createProgram(spec: ProgramSpec): object;
  run(program: object, x: Float32Array, rows: Int32Array, y: Float32Array, source?: Int32Array): void;
  addWeightedRows(out: Float32Array, y: Float32Array, from: number, tokenRows: Int32Array, weights: Float32Array, hidden: number): void;
  release(program: object): void;
  createProduct(spec: ProductSpec): object;
  product(program: object, x: Float32Array, y: Float32Array, argmax?: Int32Array): void;
  isas(): NativeIsa[];
  streamProbe(program: object, experts: Int32Array, threads: number): StreamProbeResult;
  weightStorage(program: object): ProgramWeightStorage;
  weightStorage(): WeightStorageTotals;
  setProfiling(on: boolean): void;
  readProfile(): KernelRunProfile;
}

/** One pass over some experts' weight bytes doing the least work per byte (a benchmark's achievable rate). */
export interface StreamProbeResult {
  readonly ns: number;
  readonly bytes: number;
  readonly checksum: number;
}

/** Where a program (expert program or product) holds its own copy of its weights: one mapped region, 2 MiB-aligned. */
export interface ProgramWeightStorage {
  /** The region's first byte (a multiple of 2 MiB). */
  readonly address: number;
  /** Its length: the weights rounded up to whole 2 MiB pages. */
  readonly bytes: number;
  /** madvise(MADV_HUGEPAGE) accepted (false when asked not to, or where the kernel has no transparent huge pages). */
  readonly advised: boolean;
}

/** Every live program's weight storage in this process (expert programs and products). */
export interface WeightStorageTotals {
  readonly regions: number;
  readonly bytes: number;
}

/** What this process's native programs and products hold as weight storage (tests, benchmarks). */
export function weightStorageTotals(): WeightStorageTotals {
  return loadAddon().weightStorage();
}

/**
 * Where the native expert runs' time went since profiling was turned on or last read (sums over `calls`, in ns):
 * the boundary's checks, the input's quantisation, gate/up, h's quantisation, down; the pool's phases: how late
 * the first worker took a task (wake), how long the caller waited for the last (join), tasks per side.
 */
export interface KernelRunProfile {
  readonly calls: number;
  readonly callNs: number;
  readonly checkNs: number;
  readonly quantizeXNs: number;
  readonly gateUpNs: number;
  readonly quantizeHNs: number;
  readonly downNs: number;
  readonly phases: number;
  readonly phasesWithoutWorker: number;
  readonly wakeNs: number;
  readonly joinWaitNs: number;
  readonly mainTasks: number;
  readonly workerTasks: number;
}

/** Turns the timing of native expert runs on or off on this thread (benchmarks only: a few clock reads a run). */
export function setKernelProfiling(on: boolean): void {
  loadAddon().setProfiling(on);
}

/** The profile summed since it was turned on or last read, then reset. */
export function readKernelProfile(): KernelRunProfile {
  return loadAddon().readProfile();
}

interface CodesAndScales {
  readonly codes: Uint8Array;
  readonly scales: Float32Array;
}

/** A float32 matrix [rows, cols], row-major (the loader's own array). */
interface Values {
  readonly values: Float32Array;
}

/** A bfloat16 matrix [rows, cols], row-major, each value's 16 bits (a product's only: the LM head as checkpoints store it). */
interface Bf16Values {
  readonly bf16: Uint16Array;
}

export type NativeMatrix = CodesAndScales | Values;
export type NativeProductMatrix = NativeMatrix | Bf16Values;

interface ProgramSpec {
  readonly hidden: number;
  readonly intermediate: number;
  /** 4 or 8: blockwise codes; 32: float32 values (block 0). */
  readonly bits: number;
  readonly block: number;
  readonly threads: number;
  /** -1: the best this CPU runs; else 0 scalar, 1 AVX2, 2 AVX512-VNNI. */
  readonly isa: number;
  /** Advise the weights' storage for transparent huge pages (default true). */
  readonly hugePages?: boolean;
  readonly experts: readonly { gate: NativeMatrix; up: NativeMatrix; down: NativeMatrix }[];
}

export interface ProductSpec {
  readonly outputs: number;
  readonly hidden: number;
  readonly bits: number;
  readonly block: number;
  readonly threads: number;
  readonly isa: number;
  /** As ProgramSpec's. */
  readonly hugePages?: boolean;
  readonly weight: NativeProductMatrix;
}

export type NativeIsa = 'scalar' | 'avx2' | 'avx512vnni';
export const ISA_CODES: Record<NativeIsa, number> = { scalar: 0, avx2: 1, avx512vnni: 2 };

/** The addon `npm run build:native` builds, found from the sources or the compiled build alike. */
const buildPath = (): string => join(installRoot(), 'packages', 'expert-kernel', 'build', 'expert_kernel.node');

/** The addon is not built: the message says how to build it. */
export class ExpertKernelNotBuiltError extends Error {
  override readonly name = 'ExpertKernelNotBuiltError';
  constructor(options?: { cause?: unknown }) {
    super(`the native expert kernel is not built (packages/expert-kernel/build/expert_kernel.node): run \`npm run build:native\` (needs g++), or use --expert-kernel onnxruntime`, options);
  }
}

/** Bad input at the kernel's boundary (wrong lengths, a released program, weights it cannot run); `code` says which. */
export class ExpertKernelError extends Error {
  override readonly name = 'ExpertKernelError';
  /** ERR_EXPERT_KERNEL_SHAPE, _ARGUMENT, _FORMAT, _RELEASED, _ISA, _MEMORY or _NAPI. */
  readonly code: string;
  constructor(message: string, code: string, cause?: unknown) {
    super(`expert kernel: ${message}`, cause === undefined ? undefined : { cause });
    this.code = code;
  }
}

let addon: ExpertKernelAddon | null = null;

export function loadAddon(): ExpertKernelAddon {
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)(buildPath()) as ExpertKernelAddon;
  } catch (cause) {
    throw new ExpertKernelNotBuiltError({ cause });
  }
  return addon;
}

/**
 * out[tokenRows[i]] += float32(weights[i] · y[from + i]) for i ascending, row by row of `hidden` floats: the float32
 * product, then the float32 sum, the bits of `out[j] += Math.fround(w * y[k])` on a Float32Array, natively.
 */
export function addWeightedRows(out: Float32Array, y: Float32Array, from: number, tokenRows: Int32Array, weights: Float32Array, hidden: number): void {
  const kernel = loadAddon();
  native(() => kernel.addWeightedRows(out, y, from, tokenRows, weights, hidden));
}

/** The instruction sets this CPU can run the kernel with, slowest first (throws ExpertKernelNotBuiltError). */
export function nativeKernelIsas(): NativeIsa[] {
  return loadAddon().isas();
}

export function native<T>(call: () => T): T {
  try {
    return call();
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_EXPERT_KERNEL')) throw new ExpertKernelError((cause as Error).message, code, cause);
    throw cause;
  }
}

export interface NativeProgramOptions {
  /** Threads per run, the calling thread included; 0 = one per core (as onnxruntime's intra-op count). */
  readonly threads: number;
  /** Force an instruction set (tests); by default the best this CPU has. */
  readonly isa?: NativeIsa;
  /**
   * Advise the weights' storage for transparent huge pages (MADV_HUGEPAGE; default true): streamed from memory,
   * 2 MiB pages read ~20 % faster than 4 KiB ones here (docs/benchmarks.md, issue 13, round 6). False for benchmarks' A/B.
   */
  readonly hugePages?: boolean;
}

/** Where a live program or product (named `what` in the error when released) holds its weights. */
export function storageOf(program: object | null, what: string): ProgramWeightStorage {
  if (!program) throw new ExpertKernelError(`${what} was released`, 'ERR_EXPERT_KERNEL_RELEASED');
  return native(() => loadAddon().weightStorage(program));
}

/** The weight formats the kernel runs: float32 values in memory, or blockwise int8/int4 codes. */
export function nativeKernelRuns(w: WeightData): boolean {
  return w.kind === 'memory' || w.kind === 'quantized';
}

/** One matrix as the addon reads it, with its format ("float32" or "int8/block 128") and rows × cols. */
export function nativeMatrix(w: WeightData, what: string): { matrix: NativeMatrix; format: string; rows: number; cols: number; bytes: number } {
  if (w.kind === 'quantized') return { matrix: { codes: w.q.codes, scales: w.q.scales }, format: `int${w.q.bits}/block ${w.q.block}`, rows: w.q.rows, cols: w.q.cols, bytes: w.q.codes.byteLength + w.q.scales.byteLength };
  if (w.kind === 'memory' && w.dims.length === 2) return { matrix: { values: w.data }, format: 'float32', rows: w.dims[0]!, cols: w.dims[1]!, bytes: w.data.byteLength };
  const held = w.kind === 'file' ? `${w.dtype} in the checkpoint file` : w.kind;
  throw new ExpertKernelError(`${what} is held as ${held}; the native kernel runs float32 and int8/int4 weights held in memory (--weight-dtype float32|int8|int4)`, 'ERR_EXPERT_KERNEL_FORMAT');
}

/**
 * A group of SwiGLU experts run by the native kernel: for each expert e with M_e rows of x,
 * y_e = down(silu(gate(x_e)) ⊙ up(x_e)). Over blockwise int8/int4 codes the activations are quantised per
 * block to int8 as MatMulNBits' accuracy level 4 does; over float32 weights the products are float32 (16
 * FMA lanes and a fixed lane tree). native/expert_kernel.cc states the numerics exactly. The kernel copies the
 * weights (codes and scales, or float32 values) once, unchanged, into one region of its own, 2 MiB-aligned and
 * advised for transparent huge pages, and keeps no reference to the caller's arrays: once the loader drops them
 * (LocalRoutedExperts does, and collects them after a load), each weight is held once, in the kernel's storage.
 */
export class NativeExpertProgram {
  private program: object | null;

  private constructor(
    readonly name: string,
    program: object,
    private readonly hidden: number,
    private readonly experts: number,
    /** Bytes of codes and scales (or float32 values) copied into this program's storage. */
    readonly weightBytes: number,
  ) {
    this.program = program;
  }

  static create(name: string, experts: readonly SwigluWeights[], options: NativeProgramOptions): NativeExpertProgram {
    const kernel = loadAddon();
    const first = experts[0];
    if (!first) throw new ExpertKernelError('a program needs at least one expert', 'ERR_EXPERT_KERNEL_ARGUMENT');
    const formatOf = (w: WeightData): { bits: number; block: number } => (w.kind === 'quantized' ? { bits: w.q.bits, block: w.q.block } : { bits: 32, block: 0 });
    const { bits, block } = formatOf(first.gate);
    let bytes = 0;
    const spec = experts.map((w, e) => {
      if (w.hidden !== first.hidden || w.intermediate !== first.intermediate) throw new ExpertKernelError(`expert ${e} is ${w.intermediate}×${w.hidden}, expert 0 ${first.intermediate}×${first.hidden}`, 'ERR_EXPERT_KERNEL_SHAPE');
      const [gate, up, down] = (['gate', 'up', 'down'] as const).map((p) => nativeMatrix(w[p], `expert ${e} ${p}`)) as [ReturnType<typeof nativeMatrix>, ReturnType<typeof nativeMatrix>, ReturnType<typeof nativeMatrix>];
      for (const [p, m] of [['gate', w.gate], ['up', w.up], ['down', w.down]] as const) {
        const f = formatOf(m);
        if (f.bits !== bits || f.block !== block) throw new ExpertKernelError(`expert ${e} ${p} mixes formats (${bits === 32 ? 'float32' : `int${bits}/block ${block}`} beside ${f.bits === 32 ? 'float32' : `int${f.bits}/block ${f.block}`})`, 'ERR_EXPERT_KERNEL_FORMAT');
      }
      if (gate.rows !== w.intermediate || gate.cols !== w.hidden || up.rows !== w.intermediate || up.cols !== w.hidden || down.rows !== w.hidden || down.cols !== w.intermediate) {
        throw new ExpertKernelError(`expert ${e}'s matrices do not match hidden ${w.hidden} and intermediate ${w.intermediate}`, 'ERR_EXPERT_KERNEL_SHAPE');
      }
      bytes += gate.bytes + up.bytes + down.bytes;
      return { gate: gate.matrix, up: up.matrix, down: down.matrix };
    });
    const threads = options.threads > 0 ? options.threads : availableParallelism();
    const program = native(() => kernel.createProgram({ hidden: first.hidden, intermediate: first.intermediate, bits, block, threads, isa: options.isa ? ISA_CODES[options.isa] : -1, hugePages: options.hugePages ?? true, experts: spec }));
    return new NativeExpertProgram(name, program, first.hidden, experts.length, bytes);
  }

  /**
   * x [Σ rows, hidden], experts' rows one after another → y [Σ rows, hidden], unweighted, same order. With `source`
   * ([Σ rows]), x is [tokens, hidden] and the program's row r is x's row source[r]: the rows are read where they are,
   * not gathered into a copy first. With `into` ([Σ rows, hidden] exactly), y is written there and returned: a caller
   * that reuses one buffer call after call allocates no memory outside V8's heap per run (issue 16: external memory).
   */
  run(x: Float32Array, rows: ArrayLike<number>, source?: Int32Array, into?: Float32Array): Float32Array {
    const program = this.program;
    if (!program) throw new ExpertKernelError(`program "${this.name}" was released`, 'ERR_EXPERT_KERNEL_RELEASED');
    if (rows.length !== this.experts) throw new ExpertKernelError(`rows names ${rows.length} experts, the program holds ${this.experts}`, 'ERR_EXPERT_KERNEL_SHAPE');
    const counts = Int32Array.from(rows);
    let total = 0;
    for (let e = 0; e < counts.length; e++) {
      if (!(counts[e]! >= 0) || counts[e] !== rows[e]) throw new ExpertKernelError(`rows[${e}] = ${rows[e]} is not a row count`, 'ERR_EXPERT_KERNEL_SHAPE');
      total += counts[e]!;
    }
    if (source) {
      if (source.length !== total) throw new ExpertKernelError(`source names ${source.length} rows, rows add up to ${total}`, 'ERR_EXPERT_KERNEL_SHAPE');
      if (x.length % this.hidden !== 0) throw new ExpertKernelError(`x has ${x.length} floats, not a whole number of rows of ${this.hidden}`, 'ERR_EXPERT_KERNEL_SHAPE');
    } else if (x.length !== total * this.hidden) {
      throw new ExpertKernelError(`x has ${x.length} floats, expected ${total}×${this.hidden}`, 'ERR_EXPERT_KERNEL_SHAPE');
    }
    if (into && into.length !== total * this.hidden) throw new ExpertKernelError(`into has ${into.length} floats, expected ${total}×${this.hidden}`, 'ERR_EXPERT_KERNEL_SHAPE');
    const y = into ?? new Float32Array(total * this.hidden);
    native(() => (source ? loadAddon().run(program, x, counts, y, source) : loadAddon().run(program, x, counts, y)));
    return y;
  }

  /** Streams the weight bytes of `experts` (indices into this program) once on `threads` threads, the least work per byte. */
  streamProbe(experts: readonly number[], threads: number): StreamProbeResult {
    const program = this.program;
    if (!program) throw new ExpertKernelError(`program "${this.name}" was released`, 'ERR_EXPERT_KERNEL_RELEASED');
    return native(() => loadAddon().streamProbe(program, Int32Array.from(experts), threads));
  }

  /** Where this program holds its weights (tests, benchmarks). */
  weightStorage(): ProgramWeightStorage {
    return storageOf(this.program, `program "${this.name}"`);
  }

  /** Frees the program's weight storage; the kernel's threads stop once no program is left. */
  release(): void {
    const program = this.program;
    if (!program) return;
    this.program = null;
    native(() => loadAddon().release(program));
  }
}
