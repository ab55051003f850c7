import type { WeightDtype } from './model-weights.js';

/**
 * The parts of the model whose matrices can be held in a format of their own:
 *   - `attention`: the attention projections (q or q_a/q_b, kv_a, o; kv_b follows its own rule, see WeightReader.matrix);
 *   - `dense`: the dense layers' MLPs and the MoE layers' shared experts (both run for every token, in the router);
 *   - `experts`: the routed experts (in process; shards take theirs from their own --weight-dtype);
 *   - `lmHead`: the vocabulary product;
 *   - `other`: the embedding table and the MoE gates, which quantised formats never apply to (they are read as
 *     values or decide routing): only `auto` or `float32` changes them.
 */
export const WEIGHT_PARTS = ['attention', 'dense', 'experts', 'lmHead', 'other'] as const;
export type WeightPart = (typeof WEIGHT_PARTS)[number];

/** One format per part, resolved once at start-up (from --weight-dtype and its per-part flags) and passed down. */
export type WeightFormats = Readonly<Record<WeightPart, WeightDtype>>;

/** Every part in one format (what --weight-dtype alone asks for). */
export function uniformWeightFormats(dtype: WeightDtype): WeightFormats {
  return { attention: dtype, dense: dtype, experts: dtype, lmHead: dtype, other: dtype };
}

/** A loader's argument as formats: one format for every part, or the parts' own. */
export function resolveWeightFormats(formats: WeightDtype | WeightFormats): WeightFormats {
  return typeof formats === 'string' ? uniformWeightFormats(formats) : formats;
}

/** `int8` when every part is int8, else each part's format (`attention float32, dense float32, experts int8, …`). */
export function describeWeightFormats(formats: WeightFormats): string {
  const first = formats[WEIGHT_PARTS[0]];
  if (WEIGHT_PARTS.every((p) => formats[p] === first)) return first;
  return WEIGHT_PARTS.map((p) => `${p === 'lmHead' ? 'lm-head' : p} ${formats[p]}`).join(', ');
}
