import { cpus, totalmem } from 'node:os';
import { f32, Graph, OnnxModelBuilder } from '@expertmesh/tensor-ops';

/** What this machine can do at best: the denominators of the benchmark's floors. */
export interface MachineRates {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  /** onnxruntime float32 MatMul, M=128 × K=1024 × N=4096, GFLOP/s. */
  readonly matmulGflops: number;
  /** Plain memory copy (read + write counted), GB/s. */
  readonly copyGBs: number;
  /** onnxruntime streaming a 512 MiB weight through a MatMul with M=1 (GEMV: read-bound), GB/s. */
  readonly gemvReadGBs: number;
}

/** Best mean seconds per run over three trials: rates are ceilings, so noise must not lower them. */
export async function timeIt(runs: number, f: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < 2; i++) await f();
  let best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    const t0 = performance.now();
    for (let i = 0; i < runs; i++) await f();
    best = Math.min(best, (performance.now() - t0) / runs / 1000);
  }
  return best;
}

async function matmulGraph(m: number, k: number, n: number): Promise<{ graph: Graph; x: Float32Array }> {
  const b = new OnnxModelBuilder('rate');
  const x = b.input('x', 'float32', [m, k]);
  const w = new Float32Array(k * n);
  for (let i = 0; i < w.length; i++) w[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  b.alias(b.op('MatMul', [x, b.constant({ type: 'float32', dims: [k, n], bytes: new Uint8Array(w.buffer) })]), 'y');
  b.output('y', 'float32', [m, n]);
  return { graph: await Graph.create('rate', b.toBytes()), x: new Float32Array(m * k).fill(0.01) };
}

export async function measureMachineRates(): Promise<MachineRates> {
  const mm = await matmulGraph(128, 1024, 4096);
  const tMatmul = await timeIt(30, () => mm.graph.run({ x: f32(mm.x, [128, 1024]) }));
  await mm.graph.release();

  const gemv = await matmulGraph(1, 8192, 16384); // 512 MiB: far beyond any cache
  const tGemv = await timeIt(10, () => gemv.graph.run({ x: f32(gemv.x, [1, 8192]) }));
  await gemv.graph.release();

  const src = Buffer.alloc(512 * 2 ** 20, 1);
  const dst = Buffer.alloc(src.length);
  const tCopy = await timeIt(10, () => src.copy(dst));
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    matmulGflops: (2 * 128 * 1024 * 4096) / tMatmul / 1e9,
    copyGBs: (2 * src.length) / tCopy / 1e9,
    gemvReadGBs: (8192 * 16384 * 4) / tGemv / 1e9,
  };
}
