/**
 * Limits on the JSON schemas a request may bring. XGrammar spells a length or count bound out as
 * one grammar rule per position and compiles every rule against the whole vocabulary, on the
 * event loop: a maxLength of 64 takes ~3 s on the demo vocabulary, so larger bounds are refused
 * rather than letting one request stall every stream.
 */
export const MAX_SCHEMA_BYTES = 32 * 1024;
export const MAX_SCHEMA_BOUND = 64;
const BOUNDED = ['maxLength', 'minLength', 'maxItems', 'minItems', 'maxProperties', 'minProperties'] as const;

/** Why the schema is refused, or null when it is within the limits. */
export function schemaBoundsProblem(schema: unknown): string | null {
  const bytes = Buffer.byteLength(JSON.stringify(schema) ?? '');
  if (bytes > MAX_SCHEMA_BYTES) return `the schema is ${bytes} bytes; at most ${MAX_SCHEMA_BYTES} are accepted`;
  const visit = (node: unknown, path: string): string | null => {
    if (Array.isArray(node)) {
      for (const [i, v] of node.entries()) {
        const p = visit(v, `${path}[${i}]`);
        if (p) return p;
      }
      return null;
    }
    if (node === null || typeof node !== 'object') return null;
    for (const [key, value] of Object.entries(node)) {
      if ((BOUNDED as readonly string[]).includes(key) && typeof value === 'number' && value > MAX_SCHEMA_BOUND) {
        return `${path}.${key} is ${value}; bounds above ${MAX_SCHEMA_BOUND} are not supported (each position becomes a grammar rule): drop the bound or lower it`;
      }
      const p = visit(value, `${path}.${key}`);
      if (p) return p;
    }
    return null;
  };
  return visit(schema, 'schema');
}
