import type { ModelConfig } from '@expertmesh/model-config';
import { OnnxModelBuilder, type BuiltModel } from '@expertmesh/tensor-ops';
import type { LayerWeights } from '@expertmesh/model-weights';
import { appendAttentionCore } from './attention-core-graph.js';
import { appendAttentionInput } from './attention-input-graph.js';
import { appendAttentionOutput } from './attention-output-graph.js';
import { splitKvB } from './kv-b-split.js';

/**
 * One decoder layer up to its routed experts, as one onnxruntime run (a run costs ~20 µs beside its
 * operators; three runs a layer were a tenth of a batch-1 step):
 *   q, kv = MLA input(x)                       (attention-input-graph)
 *   o_latent = attention(q, cache ∪ kv)        (attention-core-graph)
 *   x' or h, hn, routing = output(o_latent, x) (attention-output-graph; with the dense MLP or
 *                                               the shared expert if `ffnInGraph`: it then costs no
 *                                               run of its own; else the caller runs it natively;
 *                                               without `routingInGraph` the caller routes too)
 * Inputs: x [T, hidden], cos/sin [T, rope/2], the cache pool and the step's attention plan.
 * Outputs: those of the output part, and "kv" [T, rank + rope], the rows the caller writes to the cache.
 */
export function buildLayerGraph(config: ModelConfig, w: LayerWeights, softmaxScale: number, layer: number, ffnInGraph: boolean, routingInGraph = true): BuiltModel {
  const { hiddenSize: H, qkRopeHeadDim: rope, kvLoraRank: R } = config;
  const b = new OnnxModelBuilder(`layer${layer}`);
  const x = b.input('x', 'float32', ['T', H]);
  const cos = b.input('cos', 'float32', ['T', rope / 2]);
  const sin = b.input('sin', 'float32', ['T', rope / 2]);
  const { keyUp, valueUp } = splitKvB(b, config, w.attention.kvB);
  const { q, kv } = appendAttentionInput(b, config, w.attention, softmaxScale, keyUp, { x, cos, sin });
  b.alias(kv, 'kv');
  b.output('kv', 'float32', ['T', R + rope]);
  const oLatent = appendAttentionCore(b, config, q, kv);
  appendAttentionOutput(b, config, w, valueUp, { oLatent, x }, ffnInGraph, routingInGraph);
  return b.build();
}
