import { join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { linear, memoryWeight, OnnxModelBuilder } from '../src/index.js';
import { runProductGraph } from '../../../test/helpers/product-graph.js';

const ModelProto = protobuf.loadSync(join(import.meta.dirname, 'onnx-subset.proto')).lookupType('onnx.ModelProto');
interface DecodedGraph {
  node: { input: string[]; opType: string; attribute: { name: string; i?: number }[] }[];
  initializer: { name: string }[];
}
const decodeGraph = (bytes: Uint8Array): DecodedGraph => (ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, defaults: true }) as { graph: DecodedGraph }).graph;

/**
 * A float32 weight in memory baked into the graph is multiplied by Gemm with transB (onnxruntime pre-packs the
 * transposed B itself): the same bits as MatMul over a Transpose that onnxruntime folds into a transposed initializer
 * (what `linear` built before, at twice the session's creation time at R1's widths).
 */
describe('float32 products in memory', () => {
  const rows = 96;
  const cols = 200;
  const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.61) / Math.sqrt(cols));

  it('are one Gemm with transB over the weight baked in as it is: no Transpose for onnxruntime to fold at creation', () => {
    const b = new OnnxModelBuilder('product');
    b.alias(linear(b, b.input('x', 'float32', ['M', cols]), memoryWeight(w, [rows, cols]), 'w'), 'y');
    const graph = decodeGraph(b.build().bytes);
    expect(graph.node.map((n) => n.opType)).toEqual(['Gemm', 'Identity']);
    const gemm = graph.node[0]!;
    expect(gemm.attribute.find((a) => a.name === 'transB')?.i).toBe(1);
    expect(graph.initializer.map((i) => i.name)).toContain(gemm.input[1]);
  });
  for (const m of [1, 5, 32]) {
    it(`equal MatMul over the folded transpose bit for bit (${m} rows)`, async () => {
      const x = Float32Array.from({ length: m * cols }, (_, i) => Math.cos(i * 0.37));
      const folded = await runProductGraph((b, xin) => b.op('MatMul', [xin, b.op('Transpose', [b.float32Weight(w, [rows, cols], 'w').name], { perm: [1, 0] })]), x, m, cols, rows);
      const baked = await runProductGraph((b, xin) => linear(b, xin, memoryWeight(w, [rows, cols]), 'w'), x, m, cols, rows);
      expect(Array.from(baked)).toEqual(Array.from(folded));
    });
  }
});
