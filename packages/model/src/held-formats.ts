import type { LayerWeights } from '@expertmesh/model-weights';
import { weightFormat, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';

/** The parts of the model's own weights (routed experts apart: their backend reports theirs). */
export type HeldPart = 'attention' | 'dense' | 'gates' | 'lmHead' | 'embedding';

/**
 * Each part's matrices' formats as the model holds them (distinct, in load order): what the per-part formats
 * asked for, read back from the weights themselves. Attention under int8, for one: ["int8+block128", "float32"]
 * (kv_b is held float32, see WeightReader.matrix).
 */
export type HeldFormats = Readonly<Record<HeldPart, readonly string[]>>;

/** Collects HeldFormats while the model loads. */
export class HeldFormatsCollector {
  private readonly parts: Record<HeldPart, Set<string>> = { attention: new Set(), dense: new Set(), gates: new Set(), lmHead: new Set(), embedding: new Set() };

  add(part: HeldPart, ...weights: readonly WeightData[]): void {
    for (const w of weights) this.parts[part].add(weightFormat(w));
  }

  addLayer(w: LayerWeights): void {
    const a = w.attention;
    this.add('attention', ...(a.q.kind === 'full' ? [a.q.proj] : [a.q.a, a.q.b]), a.kvA, a.kvB, a.o);
    const swiglu = (s: SwigluWeights): void => this.add('dense', s.gate, s.up, s.down);
    if (w.ffn.kind === 'dense') swiglu(w.ffn.mlp);
    else {
      this.add('gates', w.ffn.router.gate);
      if (w.ffn.shared) swiglu(w.ffn.shared);
    }
  }

  result(): HeldFormats {
    const list = (p: HeldPart): readonly string[] => [...this.parts[p]];
    return { attention: list('attention'), dense: list('dense'), gates: list('gates'), lmHead: list('lmHead'), embedding: list('embedding') };
  }
}
