import { OnnxModelBuilder, swiglu, type SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * All the experts one process holds for one MoE layer, as one graph, so a whole layer's expert work
 * is one onnxruntime run (measured: a session per expert costs more than the matmuls at small batch).
 *   for each held expert e:  y_e = w_e ⊙ SwiGLU_e(x[rows_e])          (rows_e may be empty)
 *   out[token] = Σ over (e, row) routed to it of y_e[row]           (ScatterND with add)
 * Inputs  x [T, hidden]; per held expert rows_e [M_e] (int64 token indices), weights_e [M_e, 1];
 * Output  y [T, hidden]: one weighted partial sum per token.
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): Uint8Array {
  const b = new OnnxModelBuilder(name);
  const x = b.input('x', 'float32', ['T', hidden]);
  const updates: string[] = [];
  const indices: string[] = [];
  for (const { id, weights } of experts) {
    const rows = b.input(`rows_${id}`, 'int64', [`M${id}`]);
    const gateWeights = b.input(`weights_${id}`, 'float32', [`M${id}`, 1]);
    const y = swiglu(b, b.op('Gather', [x, rows], { axis: 0 }), weights, `expert${id}`);
    updates.push(b.op('Mul', [y, gateWeights]));
    indices.push(b.op('Unsqueeze', [rows, b.int64s([1])]));
  }
  const zeros = b.op('Mul', [x, b.scalarFloat(0)]);
  const out = experts.length
    ? b.op('ScatterND', [zeros, b.op('Concat', indices, { axis: 0 }), b.op('Concat', updates, { axis: 0 })], { reduction: 'add' })
    : zeros;
  b.alias(out, 'y');
  b.output('y', 'float32', ['T', hidden]);
  return b.toBytes();
}
