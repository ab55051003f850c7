import type { LogitsProcessor } from '@expertmesh/engine';
import type { Tokenizer } from '@expertmesh/tokenizer';
import { TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN, TOOL_CALLS_END, TOOL_SEP } from '../tools/deepseek-tool-call-parser.js';
import { schemaBoundsProblem } from './schema-bounds.js';
import { GrammarError, grammarCall, xgrammar, type StructuralFormat, type XCompiledGrammar, type XGrammarCompiler, type XGrammarMatcher } from './xgrammar.js';

/** What a request's output must be. */
export type OutputSpec =
  /** A JSON value matching `schema`; `null`: any JSON object (response_format json_object). */
  | { readonly kind: 'json'; readonly schema: Readonly<Record<string, unknown>> | null }
  /**
   * DeepSeek tool calls of these functions (exactly one when not parallel), with arguments valid
   * for their schemas. `forced`: the answer is the calls; otherwise free text until the model opens
   * a call block, then the calls (strict function calling with tool_choice auto).
   */
  | {
      readonly kind: 'tool-calls';
      readonly functions: readonly { readonly name: string; readonly parameters: Readonly<Record<string, unknown>> }[];
      readonly parallel: boolean;
      readonly forced: boolean;
    };

export interface ConstraintOptions {
  /** The prompt opened R1's reasoning block: free text until `</think>`, then the constrained answer. */
  readonly afterReasoning: boolean;
}

const MAX_CACHED_GRAMMARS = 64;

/**
 * Compiles output specs into token-level automata over the tokenizer's whole vocabulary (XGrammar:
 * a pushdown automaton whose per-token masks are precomputed where the grammar allows), and hands
 * out one matcher per sequence. Compiled grammars are cached (least recently used) because clients
 * send the same schema and tools over and over.
 */
export class OutputConstraints {
  private compiler: Promise<XGrammarCompiler> | null = null;
  private readonly cache = new Map<string, Promise<XCompiledGrammar>>();

  constructor(
    private readonly tokenizer: Tokenizer,
    /** Logits per step (the model's vocab_size, may exceed the tokenizer's: padding rows). */
    private readonly vocabSize: number,
    private readonly stopTokenIds: readonly number[],
  ) {}

  /** A fresh matcher for one sequence. */
  async constraint(spec: OutputSpec, options: ConstraintOptions): Promise<GrammarConstraint> {
    const compiled = await this.compiled(spec, options);
    const matcher = await grammarCall('creating a grammar matcher', () => xgrammar().GrammarMatcher.createGrammarMatcher(compiled, [...this.stopTokenIds]));
    return new GrammarConstraint(matcher);
  }

  /** Compiles now (so a bad schema is refused before generation starts). */
  async compiled(spec: OutputSpec, options: ConstraintOptions): Promise<XCompiledGrammar> {
    const key = JSON.stringify([spec, options]);
    let hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    hit = this.compile(spec, options);
    this.cache.set(key, hit);
    hit.catch(() => this.cache.delete(key));
    if (this.cache.size > MAX_CACHED_GRAMMARS) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // A matcher keeps its own reference to the compiled grammar, so the handle can go.
      void evicted.then((g) => g.dispose(), () => {});
    }
    return hit;
  }

  private async compile(spec: OutputSpec, options: ConstraintOptions): Promise<XCompiledGrammar> {
    for (const schema of spec.kind === 'json' ? [spec.schema] : spec.functions.map((f) => f.parameters)) {
      const problem = schemaBoundsProblem(schema);
      if (problem) throw new GrammarError(problem);
    }
    const answer = spec.kind === 'json' ? await jsonGrammar(spec.schema) : await toolCallsFormat(spec);
    const format: StructuralFormat = options.afterReasoning
      ? { type: 'sequence', elements: [{ type: 'tag', begin: '', content: { type: 'any_text' }, end: '</think>' }, { type: 'grammar', grammar: 'root ::= [ \\n]{0,2}' }, answer] }
      : answer;
    const compiler = await this.grammarCompiler();
    return grammarCall('compiling the output grammar', () => compiler.compileStructuralTag({ type: 'structural_tag', format }));
  }

  private grammarCompiler(): Promise<XGrammarCompiler> {
    this.compiler ??= (async () => {
      const vocab = Array.from({ length: this.vocabSize }, (_, id) => this.tokenizer.encodedVocabulary[id] ?? '');
      const xg = xgrammar();
      const info = await grammarCall('reading the vocabulary', () => xg.TokenizerInfo.createTokenizerInfo(vocab, this.tokenizer.vocabularyType, false, this.vocabSize, [...this.stopTokenIds]));
      return grammarCall('creating the grammar compiler', () => xg.GrammarCompiler.createGrammarCompiler(info));
    })();
    return this.compiler;
  }
}

/**
 * JSON for a schema, on one line with ", " and ": " between items (so a model cannot pad forever
 * with whitespace). JSON Schema semantics: properties a schema does not close stay allowed.
 */
async function jsonGrammar(schema: Readonly<Record<string, unknown>> | null): Promise<StructuralFormat> {
  const text = JSON.stringify(schema ?? { type: 'object' });
  const ast = await grammarCall('compiling the JSON schema', () => xgrammar().Grammar.fromJSONSchema(text, false, -1, [', ', ': '], false));
  const grammar = ast.toString();
  ast.dispose();
  return { type: 'grammar', grammar };
}

/**
 * `<｜tool▁calls▁begin｜>` then one or more calls of the given functions, each with schema-checked
 * arguments; unless forced, any text may come first and the block is entered only when the model
 * writes its opening token.
 */
async function toolCallsFormat(spec: Extract<OutputSpec, { kind: 'tool-calls' }>): Promise<StructuralFormat> {
  const tags: StructuralFormat[] = [];
  for (const f of spec.functions) {
    tags.push({ type: 'tag', begin: `${TOOL_CALL_BEGIN}function${TOOL_SEP}${f.name}\n\`\`\`json\n`, content: await jsonGrammar(f.parameters), end: `\n\`\`\`${TOOL_CALL_END}` });
  }
  const block = {
    type: 'tag',
    begin: TOOL_CALLS_BEGIN,
    content: { type: 'tags_with_separator', tags, separator: '\n', at_least_one: true, stop_after_first: !spec.parallel },
    end: TOOL_CALLS_END,
  } as const;
  return spec.forced ? block : { type: 'triggered_tags', triggers: [TOOL_CALLS_BEGIN], tags: [block], at_least_one: false, stop_after_first: true };
}

/**
 * One sequence's grammar state as a logits processor: before each sample, every token the grammar
 * does not allow next gets -Infinity; each sampled token advances the automaton.
 */
export class GrammarConstraint implements LogitsProcessor {
  constructor(private readonly matcher: XGrammarMatcher) {
    // The engine may still hold a sequence after its client is gone, so the WebAssembly matcher is
    // freed when this object is collected, not at a moment the API picks.
    matchers.register(this, matcher);
  }

  async process(logits: Float32Array): Promise<void> {
    const mask = await this.matcher.getNextTokenBitmask();
    const n = logits.length;
    for (let word = 0; word < mask.length; word++) {
      const bits = mask[word]!;
      if (bits === -1) continue; // all 32 allowed
      const base = word * 32;
      for (let b = 0; b < 32 && base + b < n; b++) if (((bits >>> b) & 1) === 0) logits[base + b] = -Infinity;
    }
  }

  accept(tokenId: number): void {
    if (!this.matcher.acceptToken(tokenId)) throw new Error(`token ${tokenId} was sampled but the output grammar does not allow it`);
  }

  /** The grammar reached its end (and its stop token). */
  get isComplete(): boolean {
    return this.matcher.isTerminated();
  }
}

const matchers = new FinalizationRegistry<XGrammarMatcher>((m) => m.dispose());
