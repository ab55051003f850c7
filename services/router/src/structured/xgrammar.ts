import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { compileFunction, constants } from 'node:vm';

/**
 * XGrammar (the constrained-decoding engine vLLM and SGLang use), compiled to WebAssembly as
 * `@mlc-ai/web-xgrammar`. Only the calls ExpertMesh makes are typed here.
 */
export interface XGrammar {
  readonly TokenizerInfo: {
    createTokenizerInfo(encodedVocab: string[], vocabType: string, prependSpace: boolean, vocabSize: number, stopTokenIds: number[]): Promise<XTokenizerInfo>;
  };
  readonly GrammarCompiler: { createGrammarCompiler(info: XTokenizerInfo, cacheEnabled?: boolean): Promise<XGrammarCompiler> };
  readonly Grammar: {
    fromJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean): Promise<XGrammarAst>;
  };
  readonly GrammarMatcher: { createGrammarMatcher(compiled: XCompiledGrammar, overrideStopTokens?: number[]): Promise<XGrammarMatcher> };
}

export interface XTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}
export interface XGrammarAst {
  toString(): string;
  dispose(): void;
}
export interface XCompiledGrammar {
  dispose(): void;
}
export interface XGrammarCompiler {
  compileStructuralTag(tag: { type: 'structural_tag'; format: StructuralFormat }): Promise<XCompiledGrammar>;
  dispose(): void;
}
export interface XGrammarMatcher {
  /** One bit per token id, 1 = allowed next. */
  getNextTokenBitmask(): Promise<Int32Array>;
  acceptToken(tokenId: number): boolean;
  isTerminated(): boolean;
  dispose(): void;
}

/** XGrammar's structural-tag formats (the subset used here). */
export type StructuralFormat =
  | { readonly type: 'const_string'; readonly value: string }
  | { readonly type: 'grammar'; readonly grammar: string }
  | { readonly type: 'any_text' }
  | { readonly type: 'sequence'; readonly elements: readonly StructuralFormat[] }
  | { readonly type: 'tag'; readonly begin: string; readonly content: StructuralFormat; readonly end: string }
  | { readonly type: 'tags_with_separator'; readonly tags: readonly StructuralFormat[]; readonly separator: string; readonly at_least_one: boolean; readonly stop_after_first: boolean }
  | { readonly type: 'triggered_tags'; readonly triggers: readonly string[]; readonly tags: readonly StructuralFormat[]; readonly at_least_one: boolean; readonly stop_after_first: boolean };

/** XGrammar refused a grammar or schema; its C++ exceptions reach JavaScript as bare numbers. */
export class GrammarError extends Error {
  override readonly name = 'GrammarError';
}

let loaded: XGrammar | null = null;

/**
 * Loads the library once. Its bundle is CommonJS (UMD) inside a package marked `"type": "module"`,
 * so Node's ESM loader would run it without `require`/`__filename`; it is evaluated here as the
 * CommonJS it is. Its WebAssembly is inlined, so nothing is fetched.
 */
export function xgrammar(): XGrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const path = require.resolve('@mlc-ai/web-xgrammar');
  const factory = compileFunction(readFileSync(path, 'utf8'), ['exports', 'require', 'module', '__filename', '__dirname', 'console'], {
    filename: path,
    // The bundle imports `module` dynamically in Node; let it use the main loader.
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const module = { exports: {} as Record<string, unknown> };
  factory(module.exports, createRequire(path), module, path, dirname(path), xgrammarConsole);
  loaded = module.exports as unknown as XGrammar;
  return loaded;
}

/** Messages XGrammar prints while a grammarCall runs (null: none running). */
let printed: string[] | null = null;

/**
 * The console the library sees. XGrammar reports a schema it cannot take by printing
 * "[FATAL] file:line: reason" and aborting the call (the module stays usable): that reason is
 * kept for the error; everything else goes to the real console.
 */
const xgrammarConsole: Console = Object.assign(Object.create(console) as Console, {
  error: (...args: unknown[]): void => {
    const text = args.map(String).join(' ');
    const fatal = /\[FATAL\][^:]*:\d+: (.*)/.exec(text);
    if (printed && fatal) printed.push(fatal[1]!.trim());
    else if (!(printed && /^Aborted\(/.test(text))) console.error(...args);
  },
});

/** Runs an XGrammar call (one at a time), turning its failures into a GrammarError that says why. */
export function grammarCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  const result = calls.then(() => capturedCall(what, call));
  calls = result.then(
    () => undefined,
    () => undefined,
  );
  return result;
}

let calls: Promise<void> = Promise.resolve();

async function capturedCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  printed = [];
  try {
    return await call();
  } catch (e) {
    const reason = printed.join('; ') || (e instanceof Error ? e.message : 'unsupported or invalid');
    throw new GrammarError(`${what}: ${reason}`, { cause: e });
  } finally {
    printed = null;
  }
}
