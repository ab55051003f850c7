import { NativeExpertProgram, resolveProductKernel, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import { f32, floatData, Graph, type ExecutionOptions, type SwigluWeights } from '@expertmesh/tensor-ops';
import { buildMlpGraph } from './graphs/mlp-graph.js';

/** A MoE layer's shared experts in a run of their own: y = down(silu(gate(hn)) ⊙ up(hn)) for every row. */
export interface SharedExperts {
  readonly name: string;
  /** onnxruntime's graph, or the native kernel (one expert that takes every row). */
  readonly kernel: ResolvedExpertKernel;
  /** Bytes of the loader's arrays the native kernel reads in place (0 on onnxruntime, whose session holds its copy). */
  readonly nativeBytes: number;
  /** hn [T, hidden] → y [T, hidden]. */
  run(hn: Float32Array, tokens: number): Promise<Float32Array>;
  release(): Promise<void>;
}

/**
 * What runs a shared expert under --expert-kernel (resolveProductKernel on its three matrices): `auto` or `native`
 * with the addon built and the weights held as float32 values or int8/int4 codes: the native kernel, always in a
 * run of its own (a native expert cannot sit inside the layer's onnxruntime graph); otherwise onnxruntime.
 */
export function sharedExpertsKernel(w: SwigluWeights, execution: ExecutionOptions): ResolvedExpertKernel {
  return [w.gate, w.up, w.down].every((m) => resolveProductKernel(execution.expertKernel, m) === 'native') ? 'native' : 'onnxruntime';
}

/** The shared experts as a run of their own, on the kernel sharedExpertsKernel chooses. */
export async function createSharedExperts(w: SwigluWeights, name: string, execution: ExecutionOptions): Promise<SharedExperts> {
  if (sharedExpertsKernel(w, execution) === 'native') return new NativeSharedExperts(NativeExpertProgram.create(name, [w], { threads: execution.intraOpThreads }));
  return new OnnxSharedExperts(await Graph.create(name, buildMlpGraph(w, name), execution));
}

class OnnxSharedExperts implements SharedExperts {
  readonly kernel = 'onnxruntime';
  readonly nativeBytes = 0;
  constructor(private readonly graph: Graph) {}
  get name(): string {
    return this.graph.name;
  }
  async run(hn: Float32Array, tokens: number): Promise<Float32Array> {
    return floatData((await this.graph.run({ x: f32(hn, [tokens, hn.length / tokens]) })).y, this.name, 'y');
  }
  release(): Promise<void> {
    return this.graph.release();
  }
}

class NativeSharedExperts implements SharedExperts {
  readonly kernel = 'native';
  constructor(private readonly program: NativeExpertProgram) {}
  get name(): string {
    return this.program.name;
  }
  get nativeBytes(): number {
    return this.program.weightBytes;
  }
  async run(hn: Float32Array, tokens: number): Promise<Float32Array> {
    return this.program.run(hn, [tokens]);
  }
  async release(): Promise<void> {
    this.program.release();
  }
}
