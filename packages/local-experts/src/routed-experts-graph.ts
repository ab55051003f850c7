import { gatedActivation, gateUpStackable, linear, OnnxModelBuilder, stackedGateUp, swiglu, type BuiltModel, type SwigluWeights } from '@expertmesh/tensor-ops';

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
 * batch-1 layer that the If would save; they take the shared-activation layout below (two operators per
 * expert instead of six).
 */
export function buildRoutedExpertsGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): BuiltModel {
  if (experts.every(({ weights }) => gateUpStackable(weights) && weights.intermediate === experts[0]!.weights.intermediate)) return sharedActivationGraph(experts, hidden, name);
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
    // Branch outputs keep the names of the values they are (no Identity to rename them): an unoptimised
    // graph (see STORED_EXPERTS_OPTIMIZATION) would run every Identity as a copy.
    const run = b.subgraph(`expert${id}_used`);
    run.output(swiglu(run, x, weights, `expert${id}`), 'float32', [`M${id}`, hidden]);
    const unused = b.subgraph(`expert${id}_unused`);
    unused.output(unused.constant({ type: 'float32', dims: [0, hidden], bytes: new Uint8Array(0) }, `expert${id}_none`), 'float32', [`M${id}`, hidden]);
    const hasRows = b.op('Greater', [b.op('Size', [x]), b.scalarInt64(0)]);
    outputs.push(b.op('If', [hasRows], { then_branch: { graph: run }, else_branch: { graph: unused } }));
  });
  b.output(outputs.length === 1 ? b.alias(outputs[0]!, 'y') : b.op('Concat', outputs, { axis: 0 }, { name: 'y' }), 'float32', ['P', hidden]);
  const widenedPerRun = experts.every(({ weights }) => [weights.gate, weights.up, weights.down].every((w) => w.kind === 'file' && w.dtype !== 'float32'));
  return widenedPerRun ? { ...b.build(), optimization: STORED_EXPERTS_OPTIMIZATION } : b.build();
}

/**
 * Graphs of stored experts (FP8 or BF16, widened at every run) are built without onnxruntime's graph
 * optimisation: a plan switch builds them on the shard's serving thread, and for this layout optimisation
 * is half the build (16 BF16 experts of the demo preset, one core: 12–14 → 6.5 ms) for runs as fast and
 * outputs equal bit for bit (docs/benchmarks.md, "Expert graphs built without graph optimisation"). Not for the shared-activation
 * layout below: its float32 runs were several times slower unoptimised (measured when its inlined weights were
 * multiplied by MatMul over a Transpose, which only the optimiser folds; they are Gemms with transB now, not
 * measured unoptimised since), and its outputs change; nor for float32 weights left in the file (their Transpose).
 */
const STORED_EXPERTS_OPTIMIZATION = 'disabled';

/**
 * The layer with one activation for all experts, for experts whose gate and up stack (float32 in memory,
 * int8/int4 codes; stored BF16/FP8 experts keep the per-expert layout above, each behind its If):
 *   g = Concat_e( x_e · [gate_e; up_e]ᵀ )      [Σ M_e, 2I], experts in graph order
 *   h = silu(g[:, :I]) ⊙ g[:, I:]               one Split, Sigmoid and two Muls for the whole layer
 *   y = Concat_e( h_e · down_eᵀ )               h split by the same `rows`
 * Each operator is dispatched on every run, over zero rows too: per expert this is two operators
 * instead of six (measured in docs/benchmarks.md, "One MoE layer against its floor"), for the cost of
 * copying the layer's [Σ M_e, 2I] product once more.
 */
function sharedActivationGraph(experts: readonly { id: number; weights: SwigluWeights }[], hidden: number, name: string): BuiltModel {
  const b = new OnnxModelBuilder(name);
  const all = b.input('x', 'float32', ['P', hidden]);
  const rows = b.input('rows', 'int64', [experts.length]);
  const byExpert = (t: string): string[] => (experts.length === 1 ? [t] : b.opMulti('Split', [t, rows], { axis: 0 }, { outputs: experts.length }));
  const joined = (parts: string[]): string => (parts.length === 1 ? parts[0]! : b.op('Concat', parts, { axis: 0 }));
  const x = byExpert(all);
  const gateUp = joined(experts.map(({ id, weights }, i) => stackedGateUp(b, x[i]!, weights, `expert${id}`)!));
  const h = byExpert(gatedActivation(b, gateUp, experts[0]!.weights.intermediate));
  b.alias(joined(experts.map(({ id, weights }, i) => linear(b, h[i]!, weights.down, `expert${id}_down`))), 'y');
  b.output('y', 'float32', ['P', hidden]);
  return b.build();
}
