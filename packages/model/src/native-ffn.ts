import { NativeExpertProgram, resolveProductKernel } from '@expertmesh/expert-kernel';
import type { ExecutionOptions, SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * Whether a layer's own FFN (and then its gate and routing) leaves the layer graph for the native kernel: only under
 * an explicit --expert-kernel native, and only for int8/int4 codes. Measured (docs/benchmarks.md, issue 13 round 6):
 * under int8 the decode step is level with the graphs at batch 1–32 (what leaves the graph costs about as much on
 * the kernel: ~0.1 ms a call of its pool's hand-offs), with one copy of the FFN weights instead of the loader's and
 * onnxruntime's packed one; float32 products of 8 rows and more are MLAS's faster (layer 0's MLP at batch 32: ~2×).
 * So `auto` keeps the graphs.
 */
export function denseFfnOnNative(execution: ExecutionOptions, w: SwigluWeights): boolean {
  return execution.expertKernel === 'native' && [w.gate, w.up, w.down].every((m) => m.kind === 'quantized');
}

/**
 * A layer's own SwiGLU FFN — layer 0's dense MLP, a MoE layer's shared expert — on the native expert kernel, as a
 * program of one expert: y = down(silu(gate(hn)) ⊙ up(hn)) for every row, from the kernel's own copy of the
 * weights (the loader's arrays are then dropped).
 * At a decode step these products are a few MB; in the layer's onnxruntime run they cost a dozen operators and
 * MatMulNBits' lone-product rate (~10 GB/s), on the native kernel one call at its streaming rate.
 */
export class NativeFfn {
  private constructor(private readonly program: NativeExpertProgram) {}

  /**
   * The FFN on the native kernel when --expert-kernel puts products there and its three matrices are held as float32
   * values or int8/int4 codes (resolveProductKernel, as the LM head); null: it cannot run there. The model asks
   * denseFfnOnNative first.
   */
  static create(name: string, w: SwigluWeights, execution: ExecutionOptions): NativeFfn | null {
    if ([w.gate, w.up, w.down].some((m) => resolveProductKernel(execution.expertKernel, m) !== 'native')) return null;
    return new NativeFfn(NativeExpertProgram.create(name, [w], { threads: execution.intraOpThreads }));
  }

  get name(): string {
    return this.program.name;
  }

  /** Bytes of the weights in the kernel's own storage. */
  get weightBytes(): number {
    return this.program.weightBytes;
  }

  /** hn [rows, hidden] → y [rows, hidden]. */
  run(hn: Float32Array, rows: number): Float32Array {
    return this.program.run(hn, [rows]);
  }

  release(): void {
    this.program.release();
  }
}
