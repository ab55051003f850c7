/**
 * Which experts a shard holds: `--experts 0-15,32-47` (those experts in every MoE layer), optionally
 * restricted to some layers with `@`: `--experts 0-15@3-10`. `all` holds every expert.
 */
export interface ExpertSelection {
  /** Expert ids held, or null for all. */
  readonly experts: ReadonlySet<number> | null;
  /** MoE layers held, or null for all. */
  readonly layers: ReadonlySet<number> | null;
  /** Exact experts per layer (from a placement plan); overrides the two fields above. */
  readonly perLayer?: ReadonlyMap<number, readonly number[]>;
}

export class ExpertSpecError extends Error {
  override readonly name = 'ExpertSpecError';
}

function parseRanges(text: string, what: string): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new ExpertSpecError(`"${part}" in the ${what} list is not a number or a range like 0-15`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new ExpertSpecError(`range ${part} in the ${what} list runs backwards`);
    for (let i = lo; i <= hi; i++) out.add(i);
  }
  return out;
}

export function parseExpertSpec(spec: string): ExpertSelection {
  const [expertPart, layerPart, extra] = spec.split('@');
  if (extra !== undefined) throw new ExpertSpecError(`"${spec}" has more than one @`);
  return {
    experts: expertPart === 'all' ? null : parseRanges(expertPart!, 'expert'),
    layers: layerPart === undefined ? null : parseRanges(layerPart, 'layer'),
  };
}

/** The experts of `layer` this selection holds, checked against the model's sizes. */
export function selectedExperts(selection: ExpertSelection, layer: number, nRoutedExperts: number): number[] {
  if (selection.perLayer) return [...(selection.perLayer.get(layer) ?? [])];
  if (selection.layers && !selection.layers.has(layer)) return [];
  if (!selection.experts) return Array.from({ length: nRoutedExperts }, (_, i) => i);
  for (const e of selection.experts) {
    if (e >= nRoutedExperts) throw new ExpertSpecError(`expert ${e} does not exist: the model has ${nRoutedExperts} routed experts (0-${nRoutedExperts - 1})`);
  }
  return [...selection.experts].sort((a, b) => a - b);
}

/** Expert ranges for shard `index` of `count` when experts are split evenly: "0-15" etc. */
export function evenSplitSpec(index: number, count: number, nRoutedExperts: number): string {
  const lo = Math.floor((index * nRoutedExperts) / count);
  const hi = Math.floor(((index + 1) * nRoutedExperts) / count) - 1;
  return `${lo}-${hi}`;
}

/** The selection a placement plan gives one slot: exactly those experts of those layers. */
export function selectionFromPlan(layers: readonly { layer: number; experts: readonly number[] }[]): ExpertSelection {
  return { experts: null, layers: null, perLayer: new Map(layers.map((l) => [l.layer, l.experts])) };
}
