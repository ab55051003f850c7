import { WEIGHT_DTYPES, uniformWeightFormats, type WeightDtype, type WeightFormats } from '@expertmesh/model-weights';

/** The parts a spec may name, as the CLI's per-part flags name them. */
const PARTS = { attention: 'attention', dense: 'dense', experts: 'experts', 'lm-head': 'lmHead' } as const;

const dtype = (s: string, spec: string): WeightDtype => {
  if (!(WEIGHT_DTYPES as readonly string[]).includes(s)) throw new Error(`weight format spec "${spec}": ${s} is not one of ${WEIGHT_DTYPES.join(', ')}`);
  return s as WeightDtype;
};

/**
 * A benchmark's weight formats from a short spec: `int8` (every part int8); `int8-experts` (routed experts int8,
 * the rest float32); or parts joined by `+`, e.g. `experts=int8+dense=int8` (parts not named float32, the
 * accuracy reference's format). Parts: attention, dense, experts, lm-head.
 */
export function parseWeightFormatSpec(spec: string): WeightFormats {
  if (!spec.includes('=')) {
    const [d, part, ...rest] = spec.split('-');
    if (part === undefined) return uniformWeightFormats(dtype(d!, spec));
    return parseWeightFormatSpec(`${[part, ...rest].join('-')}=${d}`);
  }
  const formats: Record<keyof WeightFormats, WeightDtype> = { ...uniformWeightFormats('float32') };
  for (const entry of spec.split('+')) {
    const [name, value] = entry.split('=') as [string, string | undefined];
    const part = PARTS[name as keyof typeof PARTS];
    if (!part || value === undefined) throw new Error(`weight format spec "${spec}": "${entry}" is not PART=FORMAT with PART one of ${Object.keys(PARTS).join(', ')}`);
    formats[part] = dtype(value, spec);
  }
  return formats;
}
