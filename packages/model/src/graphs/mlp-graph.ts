import { OnnxModelBuilder, swiglu, type BuiltModel, type SwigluWeights } from '@expertmesh/tensor-ops';

/** y = down(silu(gate(x)) ⊙ up(x)) on its own: the shared experts of a MoE layer. */
export function buildMlpGraph(w: SwigluWeights, name: string): BuiltModel {
  const b = new OnnxModelBuilder(name);
  const x = b.input('x', 'float32', ['T', w.hidden]);
  b.alias(swiglu(b, x, w, 'mlp'), 'y');
  b.output('y', 'float32', ['T', w.hidden]);
  return b.build();
}
