import type { ModelConfig } from '@expertmesh/model-config';
import { OnnxModelBuilder } from '@expertmesh/tensor-ops';

const ONNX_BOOL = 9;
const ONNX_INT32 = 6;

/**
 * DeepSeek-V3's "noaux_tc" router as graph nodes, from the sigmoid scores s [T, E]:
 *   c = s + e_score_correction_bias                        (choice uses the corrected scores)
 *   group score = sum of the two best c in each of n_group contiguous groups
 *   keep the topk_group best groups; the others' experts get -inf
 *   expert ids = top num_experts_per_tok of the kept c     (ties go to the lower index, as ONNX TopK does)
 *   weights = s at those experts, / their sum when norm_topk_prob, × routed_scaling_factor
 * Returns the names of expert_ids [T, k] (int32) and expert_weights [T, k] (float32).
 */
export function appendNoauxTcRouting(b: OnnxModelBuilder, scores: string, bias: Float32Array, config: ModelConfig): { expertIds: string; weights: string } {
  const { nRoutedExperts: E, numExpertsPerTok: k, nGroup: G, topkGroup } = config;
  const groupSize = E / G;
  const corrected = b.op('Add', [scores, b.constant({ type: 'float32', dims: [E], bytes: new Uint8Array(bias.buffer, bias.byteOffset, bias.byteLength) }, 'score_correction_bias')]);
  let choice = corrected;
  if (topkGroup < G) {
    const grouped = b.op('Reshape', [corrected, b.int64s([-1, G, groupSize])]); // [T, G, S]
    const [best] = b.opMulti('TopK', [grouped, b.int64s([Math.min(2, groupSize)])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
    const groupScores = b.op('ReduceSum', [best!, b.int64s([-1])], { keepdims: 0 }); // [T, G]
    const [, keptGroups] = b.opMulti('TopK', [groupScores, b.int64s([topkGroup])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
    const zeros = b.op('Expand', [b.scalarFloat(0), b.op('Shape', [groupScores])]);
    const ones = b.op('Expand', [b.scalarFloat(1), b.op('Shape', [keptGroups!])]);
    const groupMask = b.op('ScatterElements', [zeros, keptGroups!, ones], { axis: 1 }); // 1 for kept groups
    const keep = b.op('Unsqueeze', [b.op('Cast', [groupMask], { to: ONNX_BOOL }), b.int64s([2])]); // [T, G, 1]
    choice = b.op('Reshape', [b.op('Where', [keep, grouped, b.scalarFloat(-Infinity)]), b.int64s([-1, E])]);
  }
  const [, chosen] = b.opMulti('TopK', [choice, b.int64s([k])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 }); // [T, k] int64
  let weights = b.op('GatherElements', [scores, chosen!], { axis: 1 });
  if (config.normTopkProb) weights = b.op('Div', [weights, b.op('Add', [b.op('ReduceSum', [weights, b.int64s([-1])], { keepdims: 1 }), b.scalarFloat(1e-20)])]);
  weights = b.op('Mul', [weights, b.scalarFloat(config.routedScalingFactor)]);
  return { expertIds: b.op('Cast', [chosen!], { to: ONNX_INT32 }), weights };
}

/** The router alone, scores [T, E] in and expert_ids, expert_weights out: for tests and benchmarks. */
export function buildRoutingGraph(config: ModelConfig, bias: Float32Array): Uint8Array {
  const b = new OnnxModelBuilder('routing');
  const scores = b.input('scores', 'float32', ['T', config.nRoutedExperts]);
  const { expertIds, weights } = appendNoauxTcRouting(b, scores, bias, config);
  b.alias(expertIds, 'expert_ids');
  b.alias(weights, 'expert_weights');
  b.output('expert_ids', 'int32', ['T', config.numExpertsPerTok]);
  b.output('expert_weights', 'float32', ['T', config.numExpertsPerTok]);
  return b.toBytes();
}
