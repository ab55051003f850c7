import { OnnxModelBuilder, swiglu, type SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * All the experts one process holds for one MoE layer, as one graph, so a whole layer's expert work
 * is one onnxruntime run (measured: a session per expert costs more than the matmuls at small batch).
 *   for each held expert e:  y_e = w_e ⊙ SwiGLU_e(x[rows_e])          (rows_e may be empty)
 * Inputs  x [T, hidden]; per held expert rows_e [M_e] (int64 token indices), weights_e [M_e, 1];
 * Output  y [Σ M_e, hidden]: the weighted expert outputs, experts in input order. The caller adds
 * them into their tokens: onnxruntime's ScatterND with reduction "add" runs in parallel and loses
 * updates when a token has several experts (seen as corrupted rows at 512-token batches).
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): Uint8Array {
  const b = new OnnxModelBuilder(name);
  const x = b.input('x', 'float32', ['T', hidden]);
  const updates: string[] = [];
  for (const { id, weights } of experts) {
    const rows = b.input(`rows_${id}`, 'int64', [`M${id}`]);
    const gateWeights = b.input(`weights_${id}`, 'float32', [`M${id}`, 1]);
    const y = swiglu(b, b.op('Gather', [x, rows], { axis: 0 }), weights, `expert${id}`);
    updates.push(b.op('Mul', [y, gateWeights]));
  }
  b.alias(updates.length === 1 ? updates[0]! : b.op('Concat', updates, { axis: 0 }), 'y');
  b.output('y', 'float32', ['P', hidden]);
  return b.toBytes();
}
