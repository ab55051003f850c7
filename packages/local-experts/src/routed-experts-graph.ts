import { OnnxModelBuilder, swiglu, type BuiltModel, type SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * All the experts one process holds for one MoE layer, as one graph, so a whole layer's expert work
 * is one onnxruntime run (measured: a session per expert costs more than the matmuls at small batch).
 *   for each held expert e:  y_e = w_e ⊙ SwiGLU_e(x[rows_e])          (rows_e may be empty)
 * Inputs  x [T, hidden]; per held expert rows_e [M_e] (int64 token indices), weights_e [M_e, 1];
 * Output  y [Σ M_e, hidden]: the weighted expert outputs, experts in input order. The caller adds
 * them into their tokens: onnxruntime's ScatterND with reduction "add" runs in parallel and loses
 * updates when a token has several experts (seen as corrupted rows at 512-token batches).
 *
 * Experts whose weights stay stored (BF16, FP8) are widened on every run that uses them, so each
 * sits in an If on "has rows": an expert no token chose costs nothing. Float32 experts need no
 * guard: a product over zero rows is free.
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): BuiltModel {
  const b = new OnnxModelBuilder(name);
  const x = b.input('x', 'float32', ['T', hidden]);
  const updates: string[] = [];
  for (const { id, weights } of experts) {
    const rows = b.input(`rows_${id}`, 'int64', [`M${id}`]);
    const gateWeights = b.input(`weights_${id}`, 'float32', [`M${id}`, 1]);
    const stored = [weights.gate, weights.up, weights.down].some((w) => w.kind === 'file');
    if (!stored) {
      updates.push(b.op('Mul', [swiglu(b, b.op('Gather', [x, rows], { axis: 0 }), weights, `expert${id}`), gateWeights]));
      continue;
    }
    const used = b.subgraph(`expert${id}_used`);
    const y = used.op('Mul', [swiglu(used, used.op('Gather', [x, rows], { axis: 0 }), weights, `expert${id}`), gateWeights]);
    used.output(used.alias(y, `expert${id}_y`), 'float32', [`M${id}`, hidden]);
    const unused = b.subgraph(`expert${id}_unused`);
    unused.output(unused.alias(unused.constant({ type: 'float32', dims: [0, hidden], bytes: new Uint8Array(0) }, 'empty'), `expert${id}_none`), 'float32', [`M${id}`, hidden]);
    const hasRows = b.op('Greater', [b.op('Size', [rows]), b.scalarInt64(0)]);
    updates.push(b.op('If', [hasRows], { then_branch: { graph: used }, else_branch: { graph: unused } }));
  }
  b.alias(updates.length === 1 ? updates[0]! : b.op('Concat', updates, { axis: 0 }), 'y');
  b.output('y', 'float32', ['P', hidden]);
  return b.build();
}
