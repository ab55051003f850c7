import { f32, floatData, Graph, OnnxModelBuilder } from '@expertmesh/tensor-ops';

/**
 * Builds a one-input graph x [m, cols] → y [m, rows] from `build` (what it appends to the builder, given x), runs it
 * once on `x` and releases it: the outputs of one product (or a few ops) as onnxruntime computes them.
 */
export async function runProductGraph(build: (b: OnnxModelBuilder, x: string) => string, x: Float32Array, m: number, cols: number, rows: number): Promise<Float32Array> {
  const b = new OnnxModelBuilder('product');
  b.alias(build(b, b.input('x', 'float32', ['M', cols])), 'y');
  b.output('y', 'float32', ['M', rows]);
  const graph = await Graph.create('product', b.build());
  try {
    return floatData((await graph.run({ x: f32(x, [m, cols]) })).y, 'product', 'y');
  } finally {
    await graph.release();
  }
}
