import { f32, floatData, Graph, i64, type ExecutionOptions, type SwigluWeights } from '@expertmesh/tensor-ops';
import { addWeightedRows, ExpertKernelConfigError, ExpertKernelError, NativeExpertProgram, resolveExpertKernel, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import { buildRoutedExpertsGraph } from './routed-experts-graph.js';

/**
 * What runs one group of a layer's experts: x [Σ M_e, hidden], the rows of each expert one after another
 * (`rows` [experts] = M_e, in the group's order) → y [Σ M_e, hidden], the unweighted expert outputs in the
 * same order. The caller gathers the rows and weights and adds the outputs (LocalRoutedExperts).
 */
export interface ExpertProgram {
  readonly name: string;
  run(x: Float32Array, rows: readonly number[]): Promise<Float32Array> | Float32Array;
  /**
   * The same with the rows read from `hidden` [tokens, hidden] by index (`source` [Σ M_e]), where the kernel can: no
   * gathered copy. Synchronous; y is written into `into` ([Σ M_e, hidden]) and returned.
   */
  runRows?(hidden: Float32Array, source: Int32Array, rows: readonly number[], into: Float32Array): Float32Array;
  /**
   * out[tokenRows[i]] += float32(weights[i] · y[from + i]), i ascending, natively where the kernel offers it; the
   * bits of the JavaScript loop (LocalRoutedExperts.computePairs).
   */
  addWeightedRows?(out: Float32Array, y: Float32Array, from: number, tokenRows: Int32Array, weights: Float32Array): void;
  release(): Promise<void> | void;
}

/** The native program, with the rows gathered and the outputs weighted and added in the addon. */
class NativeKernelProgram implements ExpertProgram {
  constructor(
    private readonly program: NativeExpertProgram,
    private readonly hidden: number,
  ) {}

  get name(): string {
    return this.program.name;
  }

  run(x: Float32Array, rows: readonly number[]): Float32Array {
    return this.program.run(x, rows);
  }

  runRows(hidden: Float32Array, source: Int32Array, rows: readonly number[], into: Float32Array): Float32Array {
    return this.program.run(hidden, rows, source, into);
  }

  addWeightedRows(out: Float32Array, y: Float32Array, from: number, tokenRows: Int32Array, weights: Float32Array): void {
    addWeightedRows(out, y, from, tokenRows, weights, this.hidden);
  }

  release(): void {
    this.program.release();
  }
}

/** The group as one onnxruntime graph (buildRoutedExpertsGraph): every weight format. */
class OnnxExpertProgram implements ExpertProgram {
  constructor(
    private readonly graph: Graph,
    private readonly hidden: number,
  ) {}

  get name(): string {
    return this.graph.name;
  }

  async run(x: Float32Array, rows: readonly number[]): Promise<Float32Array> {
    return floatData((await this.graph.run({ x: f32(x, [x.length / this.hidden, this.hidden]), rows: i64(BigInt64Array.from(rows, BigInt), [rows.length]) })).y, this.graph.name, 'y');
  }

  release(): Promise<void> {
    return this.graph.release();
  }
}

/**
 * The kernel that runs experts held as `expertDtype` (resolveExpertKernel: `auto` decided, `native` refused at
 * start-up for a format it cannot run or when the addon is not built).
 */
export function checkExpertKernel(execution: ExecutionOptions, expertDtype: string): ResolvedExpertKernel {
  return resolveExpertKernel(execution.expertKernel, expertDtype);
}

/** The program for one group of experts, by the execution options' expert kernel. */
export async function createExpertProgram(name: string, experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, execution: ExecutionOptions & { readonly expertKernel: ResolvedExpertKernel }): Promise<ExpertProgram> {
  if (execution.expertKernel === 'native') {
    try {
      return new NativeKernelProgram(NativeExpertProgram.create(name, experts.map((e) => e.weights), { threads: execution.intraOpThreads }), hidden);
    } catch (error) {
      if (error instanceof ExpertKernelError && error.code === 'ERR_EXPERT_KERNEL_FORMAT') throw new ExpertKernelConfigError(`${error.message}: use --expert-kernel onnxruntime for these weights`, { cause: error });
      throw error;
    }
  }
  return new OnnxExpertProgram(await Graph.create(name, buildRoutedExpertsGraph(experts, hidden, name), execution), hidden);
}
