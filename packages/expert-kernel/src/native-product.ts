import { availableParallelism } from 'node:os';
import type { WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelError, ISA_CODES, loadAddon, native, nativeMatrix, type NativeProgramOptions } from './native-expert-program.js';

/** What one product call gives: y [m, outputs] and each row's argmax (lowest index of its largest value). */
export interface ProductResult {
  readonly y: Float32Array;
  readonly argmax: Int32Array;
}

/**
 * y = x · Wᵀ over one matrix W [outputs, hidden] on the native kernel (the LM head, a dense projection), in the
 * numerics of the experts' products (native/expert_kernel.cc): float32 values by 16-lane FMA and a fixed lane tree, or
 * blockwise int8/int4 codes against activations quantised per block as MatMulNBits' accuracy level 4. The kernel
 * references the loader's arrays (values, or codes and scales): nothing is copied.
 */
export class NativeProduct {
  private program: object | null;

  private constructor(
    readonly name: string,
    program: object,
    readonly outputs: number,
    readonly hidden: number,
    /** Bytes of the weight referenced (held alive) by this program. */
    readonly weightBytes: number,
  ) {
    this.program = program;
  }

  static create(name: string, weight: WeightData, options: NativeProgramOptions): NativeProduct {
    const kernel = loadAddon();
    const m = nativeMatrix(weight, name);
    const { bits, block } = weight.kind === 'quantized' ? { bits: weight.q.bits, block: weight.q.block } : { bits: 32, block: 0 };
    const threads = options.threads > 0 ? options.threads : availableParallelism();
    const program = native(() => kernel.createProduct({ outputs: m.rows, hidden: m.cols, bits, block, threads, isa: options.isa ? ISA_CODES[options.isa] : -1, weight: m.matrix }));
    return new NativeProduct(name, program, m.rows, m.cols, m.bytes);
  }

  /** x [m, hidden] → y [m, outputs] and each row's argmax. */
  run(x: Float32Array): ProductResult {
    const program = this.program;
    if (!program) throw new ExpertKernelError(`product "${this.name}" was released`, 'ERR_EXPERT_KERNEL_RELEASED');
    if (x.length % this.hidden !== 0) throw new ExpertKernelError(`x has ${x.length} floats, not a whole number of rows of ${this.hidden}`, 'ERR_EXPERT_KERNEL_SHAPE');
    const m = x.length / this.hidden;
    const y = new Float32Array(m * this.outputs);
    const argmax = new Int32Array(m);
    native(() => loadAddon().product(program, x, y, argmax));
    return { y, argmax };
  }

  /** Drops the reference to the weight. */
  release(): void {
    const program = this.program;
    if (!program) return;
    this.program = null;
    native(() => loadAddon().release(program));
  }
}
