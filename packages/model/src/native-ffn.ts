import { NativeExpertProgram, resolveProductKernel } from '@expertmesh/expert-kernel';
import type { ExecutionOptions, SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * A layer's own SwiGLU FFN — layer 0's dense MLP, a MoE layer's shared expert — on the native expert kernel, as a
 * program of one expert: y = down(silu(gate(hn)) ⊙ up(hn)) for every row, read in place from the loader's arrays.
 * At a decode step these products are a few MB; in the layer's onnxruntime run they cost a dozen operators and
 * MatMulNBits' lone-product rate (~10 GB/s), on the native kernel one call at its streaming rate.
 */
export class NativeFfn {
  private constructor(private readonly program: NativeExpertProgram) {}

  /**
   * The FFN on the native kernel when --expert-kernel (`auto`, `native`) puts products there and its three matrices
   * are held as float32 values or int8/int4 codes (resolveProductKernel, as the LM head); null: it stays in the graph.
   */
  static create(name: string, w: SwigluWeights, execution: ExecutionOptions): NativeFfn | null {
    if ([w.gate, w.up, w.down].some((m) => resolveProductKernel(execution.expertKernel, m) !== 'native')) return null;
    return new NativeFfn(NativeExpertProgram.create(name, [w], { threads: execution.intraOpThreads }));
  }

  get name(): string {
    return this.program.name;
  }

  /** Bytes of the loader's arrays the kernel reads in place. */
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
