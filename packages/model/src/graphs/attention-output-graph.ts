import type { ModelConfig } from '@expertmesh/model-config';
import { linear, rmsNorm, swiglu, type OnnxModelBuilder } from '@expertmesh/tensor-ops';
import type { LayerWeights } from '@expertmesh/model-weights';
import { appendNoauxTcRouting } from './routing-graph.js';

/**
 * The rest of a layer after attention scores:
 *   o = W_o · concat_h(o_latent[h] · W_vb[h]ᵀ);  h = x + o;  hn = RMSNorm(h)
 * Dense layers finish here:  x' = h + MLP(hn)                       → output "x_out"
 * MoE layers hand over:      h, hn and the routing (noaux_tc on the gate's sigmoid scores)
 *                            → outputs "h", "hn", "expert_ids" [T, k] int32, "expert_weights" [T, k]
 * (the routed experts run outside, so they can run on other machines). With `ffnInGraph`, the
 * shared expert runs here too and "h" is h + shared(hn); otherwise the caller runs it beside the routed ones.
 * Without `ffnInGraph` a dense layer hands over "h" and "hn" too, and the caller runs its MLP (native kernel);
 * without `routingInGraph` a MoE layer hands over "h" and "hn" only, and the caller routes (native-router).
 * valueUp from `splitKvB`.
 */
export function appendAttentionOutput(b: OnnxModelBuilder, config: ModelConfig, w: LayerWeights, valueUp: string, inputs: { oLatent: string; x: string }, ffnInGraph: boolean, routingInGraph = true): void {
  const { hiddenSize: H, numHeads: nH, vHeadDim: v, rmsNormEps: eps } = config;
  const { oLatent, x } = inputs;
  const byHead = b.op('MatMul', [b.op('Transpose', [oLatent], { perm: [1, 0, 2] }), b.op('Transpose', [valueUp], { perm: [0, 2, 1] })]);
  const heads = b.op('Reshape', [b.op('Transpose', [byHead], { perm: [1, 0, 2] }), b.int64s([-1, nH * v])]);
  const h = b.op('Add', [x, linear(b, heads, w.attention.o, 'o_proj')]);
  const hn = rmsNorm(b, h, w.postAttentionNorm, eps, 'post_attention_norm');
  if (w.ffn.kind === 'dense' && ffnInGraph) {
    b.alias(b.op('Add', [h, swiglu(b, hn, w.ffn.mlp, 'mlp')]), 'x_out');
    b.output('x_out', 'float32', ['T', H]);
  } else if (w.ffn.kind === 'dense') {
    b.alias(h, 'h');
    b.alias(hn, 'hn');
    b.output('h', 'float32', ['T', H]);
    b.output('hn', 'float32', ['T', H]);
  } else {
    b.alias(ffnInGraph && w.ffn.shared ? b.op('Add', [h, swiglu(b, hn, w.ffn.shared, 'shared_experts')]) : h, 'h');
    b.alias(hn, 'hn');
    b.output('h', 'float32', ['T', H]);
    b.output('hn', 'float32', ['T', H]);
    if (!routingInGraph) return;
    const scores = b.op('Sigmoid', [linear(b, hn, w.ffn.router.gate, 'gate')]);
    const routing = appendNoauxTcRouting(b, scores, w.ffn.router.scoreCorrectionBias, config);
    b.alias(routing.expertIds, 'expert_ids');
    b.alias(routing.weights, 'expert_weights');
    b.output('expert_ids', 'int32', ['T', config.numExpertsPerTok]);
    b.output('expert_weights', 'float32', ['T', config.numExpertsPerTok]);
  }
}
