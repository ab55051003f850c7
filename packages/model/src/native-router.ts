import type { ModelConfig } from '@expertmesh/model-config';
import { NativeProduct, resolveProductKernel } from '@expertmesh/expert-kernel';
import type { RouterWeights } from '@expertmesh/model-weights';
import type { ExpertRouting } from '@expertmesh/routed-experts';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { noauxTcRouting } from './noaux-tc-routing.js';

/**
 * A MoE layer's gate and routing off the layer graph: the gate's product [E, hidden] on the native kernel, the
 * sigmoid and noaux_tc in JavaScript (float32, as the graph). Chosen with the layer's native FFN (denseFfnOnNative);
 * the graph then ends at h and hn.
 */
export class NativeRouter {
  private constructor(
    private readonly gate: NativeProduct,
    private readonly bias: Float32Array,
    private readonly config: ModelConfig,
  ) {}

  /** On the native kernel when --expert-kernel puts products there and the gate is held in memory; else null. */
  static create(name: string, w: RouterWeights, config: ModelConfig, execution: ExecutionOptions): NativeRouter | null {
    if (resolveProductKernel(execution.expertKernel, w.gate) !== 'native') return null;
    // On the calling thread alone: for a few hundred KiB the pool's hand-off costs more than the second core gives
    // (batch 1: 0.035–0.04 ms a call against 0.06–0.07 on two threads; the kernel's numerics do not depend on it).
    return new NativeRouter(NativeProduct.create(name, w.gate, { threads: 1 }), w.scoreCorrectionBias, config);
  }

  get name(): string {
    return this.gate.name;
  }

  get weightBytes(): number {
    return this.gate.weightBytes;
  }

  /** hn [T, hidden] → the experts each token goes to and their weights. */
  route(hn: Float32Array, T: number): ExpertRouting {
    const scores = this.gate.run(hn).y;
    for (let i = 0; i < scores.length; i++) scores[i] = 1 / (1 + Math.exp(-scores[i]!));
    return noauxTcRouting(scores, T, this.bias, this.config);
  }

  release(): void {
    this.gate.release();
  }
}
