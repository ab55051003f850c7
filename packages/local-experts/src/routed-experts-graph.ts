import { OnnxModelBuilder, swiglu, type BuiltModel, type SwigluWeights } from '@expertmesh/tensor-ops';

/**
 * All the experts one process holds for one MoE layer, as one graph, so a whole layer's expert work
 * is one onnxruntime run (measured: a session per expert costs more than the matmuls at small batch).
 *   for each held expert e:  y_e = SwiGLU_e(x_e)          (x_e may have no rows)
 * Inputs  per held expert x_e [M_e, hidden]: the rows of the tokens that chose it, gathered by the caller.
 * Output  y [Σ M_e, hidden]: the unweighted expert outputs, experts in input order. The caller weights
 * them and adds them into their tokens: onnxruntime's ScatterND with reduction "add" runs in parallel
 * and loses updates when a token has several experts (seen as corrupted rows at 512-token batches).
 *
 * Gathering the rows and weighting the outputs outside the graph saves two operators per expert and
 * half the inputs per run (each operator is dispatched even over zero rows, ~1.5 µs each; measured
 * with bench/expert-layer.ts: a batch-1 layer of 64 experts spends 0.55 ms on dispatch, 0.85 before).
 * Experts whose weights stay stored (BF16, FP8) are widened on every run that uses them, so each sits
 * in an If on "has rows": an expert no token chose costs nothing. Float32 and int8/int4 experts are
 * not guarded: onnxruntime keeps a second copy of weights used inside an If's branch (measured: the
 * bench preset's resident memory after load 1.4× → 2.3× its weights in float32), against ~0.3 ms per
 * batch-1 layer that the If would save.
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): BuiltModel {
  const b = new OnnxModelBuilder(name);
  const outputs: string[] = [];
  for (const { id, weights } of experts) {
    const x = b.input(`x_${id}`, 'float32', [`M${id}`, hidden]);
    if (![weights.gate, weights.up, weights.down].some((w) => w.kind === 'file')) {
      outputs.push(swiglu(b, x, weights, `expert${id}`));
      continue;
    }
    const run = b.subgraph(`expert${id}_used`);
    run.output(run.alias(swiglu(run, x, weights, `expert${id}`), `expert${id}_y`), 'float32', [`M${id}`, hidden]);
    const unused = b.subgraph(`expert${id}_unused`);
    unused.output(unused.alias(unused.constant({ type: 'float32', dims: [0, hidden], bytes: new Uint8Array(0) }, 'empty'), `expert${id}_none`), 'float32', [`M${id}`, hidden]);
    const hasRows = b.op('Greater', [b.op('Size', [x]), b.scalarInt64(0)]);
    outputs.push(b.op('If', [hasRows], { then_branch: { graph: run }, else_branch: { graph: unused } }));
  }
  b.alias(outputs.length === 1 ? outputs[0]! : b.op('Concat', outputs, { axis: 0 }), 'y');
  b.output('y', 'float32', ['P', hidden]);
  return b.build();
}
