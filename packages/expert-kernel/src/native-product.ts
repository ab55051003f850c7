import { availableParallelism } from 'node:os';
import type { WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelError, ISA_CODES, loadAddon, native, nativeMatrix, storageOf, type NativeProgramOptions, type ProgramWeightStorage } from './native-expert-program.js';

/** What one product call gives: y [m, outputs] and each row's argmax (lowest index of its largest value). */
export interface ProductResult {
  readonly y: Float32Array;
  readonly argmax: Int32Array;
}

/**
 * A bfloat16 matrix [rows, cols] as a checkpoint stores it (each value's 16 bits, row-major), read into memory: the
 * product widens each value as it reads it (exactly: a bfloat16 is a float32's upper half), so its sums are those of
 * the float32 product over the widened matrix, from half the bytes.
 */
export interface Bf16Weight {
  readonly kind: 'bf16';
  readonly rows: number;
  readonly cols: number;
  readonly bits: Uint16Array;
}

/**
 * y = x · Wᵀ over one matrix W [outputs, hidden] on the native kernel (the LM head, a dense projection), in the
 * numerics of the experts' products (native/expert_kernel.cc): float32 values (or bfloat16 values widened as they are
 * read: the same sums) by 16-lane FMA and a fixed lane tree, or
 * blockwise int8/int4 codes against activations quantised per block as MatMulNBits' accuracy level 4. As an expert
 * program's, the weight (values, or codes and scales) is copied once, unchanged, into a region of the kernel's own,
 * 2 MiB-aligned and advised for transparent huge pages (streamed ~20 % faster than from 4 KiB pages here), and the
 * caller's arrays are not referenced: once the loader drops them, the weight is held once, in the kernel's storage.
 */
export class NativeProduct {
  private program: object | null;

  private constructor(
    readonly name: string,
    program: object,
    readonly outputs: number,
    readonly hidden: number,
    /** Bytes of the weight (codes and scales, or float32 or bfloat16 values) copied into this product's storage. */
    readonly weightBytes: number,
  ) {
    this.program = program;
  }

  static create(name: string, weight: WeightData | Bf16Weight, options: NativeProgramOptions): NativeProduct {
    const kernel = loadAddon();
    if (weight.kind === 'bf16' && weight.bits.length !== weight.rows * weight.cols) {
      throw new ExpertKernelError(`${name}: ${weight.bits.length} bfloat16 values, not ${weight.rows}×${weight.cols}`, 'ERR_EXPERT_KERNEL_SHAPE');
    }
    const m = weight.kind === 'bf16' ? { matrix: { bf16: weight.bits }, rows: weight.rows, cols: weight.cols, bytes: weight.bits.byteLength } : nativeMatrix(weight, name);
    const { bits, block } = weight.kind === 'quantized' ? { bits: weight.q.bits, block: weight.q.block } : weight.kind === 'bf16' ? { bits: 16, block: 0 } : { bits: 32, block: 0 };
    const threads = options.threads > 0 ? options.threads : availableParallelism();
    const program = native(() => kernel.createProduct({ outputs: m.rows, hidden: m.cols, bits, block, threads, isa: options.isa ? ISA_CODES[options.isa] : -1, hugePages: options.hugePages ?? true, weight: m.matrix }));
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

  /** Where this product holds its weight (tests, benchmarks). */
  weightStorage(): ProgramWeightStorage {
    return storageOf(this.program, `product "${this.name}"`);
  }

  /** Frees the product's weight storage. */
  release(): void {
    const program = this.program;
    if (!program) return;
    this.program = null;
    native(() => loadAddon().release(program));
  }
}
