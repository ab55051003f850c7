import { OnnxModelBuilder, swiglu, type BuiltModel, type SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * All the experts one process holds for one MoE layer, as one graph, so a whole layer's expert work
 * is one onnxruntime run (measured: a session per expert costs more than the matmuls at small batch).
 *   x_e = the rows of x that belong to expert e (Split of x by `rows`)
 *   for each held expert e:  y_e = SwiGLU_e(x_e)          (x_e may have no rows)
 * Inputs  x [Σ M_e, hidden]: the rows of the tokens that chose each expert, gathered by the caller,
 *         experts in graph order; rows [experts] int64: M_e, how many of them are expert e's.
 * Output  y [Σ M_e, hidden]: the unweighted expert outputs, experts in the same order. The caller weights
 * them and adds them into their tokens: onnxruntime's ScatterND with reduction "add" runs in parallel
 * and loses updates when a token has several experts (seen as corrupted rows at 512-token batches).
 *
 * Gathering the rows and weighting the outputs outside the graph saves two operators per expert and
 * most of the inputs per run: each operator is dispatched even over zero rows, and each fed input costs
 * onnxruntime-node ~1.7 µs to convert (measured: one run of a 64-input graph 124 µs, of a 1-input one
 * 19 µs), so the rows come as one input split in the graph (one operator) rather than one input per expert.
 * Experts whose weights stay stored (BF16, FP8) are widened on every run that uses them, so each sits
 * in an If on "has rows": an expert no token chose costs nothing. Float32 and int8/int4 experts are
 * not guarded: onnxruntime keeps a second copy of weights used inside an If's branch (measured: the
 * bench preset's resident memory after load 1.4× → 2.3× its weights in float32), against ~0.3 ms per
 * batch-1 layer that the If would save.
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): BuiltModel {
  const b = new OnnxModelBuilder(name);
  const outputs: string[] = [];
  const all = b.input('x', 'float32', ['P', hidden]);
  const rows = b.input('rows', 'int64', [experts.length]);
  const parts = experts.length === 1 ? [all] : b.opMulti('Split', [all, rows], { axis: 0 }, { outputs: experts.length });
  experts.forEach(({ id, weights }, i) => {
    const x = parts[i]!;
    if (![weights.gate, weights.up, weights.down].some((w) => w.kind === 'file')) {
      outputs.push(swiglu(b, x, weights, `expert${id}`));
      return;
    }
    const run = b.subgraph(`expert${id}_used`);
    run.output(run.alias(swiglu(run, x, weights, `expert${id}`), `expert${id}_y`), 'float32', [`M${id}`, hidden]);
    const unused = b.subgraph(`expert${id}_unused`);
    unused.output(unused.alias(unused.constant({ type: 'float32', dims: [0, hidden], bytes: new Uint8Array(0) }, 'empty'), `expert${id}_none`), 'float32', [`M${id}`, hidden]);
    const hasRows = b.op('Greater', [b.op('Size', [x]), b.scalarInt64(0)]);
    outputs.push(b.op('If', [hasRows], { then_branch: { graph: run }, else_branch: { graph: unused } }));
  });
  b.alias(outputs.length === 1 ? outputs[0]! : b.op('Concat', outputs, { axis: 0 }), 'y');
  b.output('y', 'float32', ['P', hidden]);
  return b.build();
}
