/**
 * The llama.cpp benchmark's conversion check: llama.cpp's F32 greedy tokens against ours (float32) on the same
 * prompts. A difference means the GGUF (or one engine) computes another model, and every timing after it would
 * compare two different things: so the benchmark stops on it, naming each differing prompt and where it first differs.
 */

export interface PromptComparison {
  /** The check prompt's index. */
  readonly prompt: number;
  readonly ours: readonly number[];
  readonly llamaCpp: readonly number[];
  /** The first position where the two continuations differ (a shorter one differs where it ends); null if equal. */
  readonly firstDifference: number | null;
}

export interface ConversionCheck {
  readonly prompts: readonly PromptComparison[];
  /** How many prompts' continuations are identical. */
  readonly identical: number;
  readonly passed: boolean;
}

/** The first position where `a` and `b` differ (the shorter one's length if one is a prefix of the other), else null. */
export function firstDifference(a: readonly number[], b: readonly number[]): number | null {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? null : n;
}

/** Compares the two engines' greedy continuations of the same check prompts, prompt by prompt. */
export function compareConversion(ours: readonly (readonly number[])[], llamaCpp: readonly (readonly number[])[]): ConversionCheck {
  if (ours.length !== llamaCpp.length) throw new RangeError(`the conversion check needs the same prompts on both engines: ours ran ${ours.length}, llama.cpp ${llamaCpp.length}`);
  if (ours.length === 0) throw new RangeError('the conversion check needs at least one prompt');
  const prompts = ours.map((o, i) => ({ prompt: i, ours: o, llamaCpp: llamaCpp[i]!, firstDifference: firstDifference(o, llamaCpp[i]!) }));
  const identical = prompts.filter((p) => p.firstDifference === null).length;
  return { prompts, identical, passed: identical === prompts.length };
}

/** One line per differing prompt: where it first differs and the two tokens there. */
export function describeMismatch(check: ConversionCheck): string {
  const token = (t: readonly number[], i: number): string => (i < t.length ? String(t[i]) : 'end');
  return check.prompts
    .filter((p) => p.firstDifference !== null)
    .map((p) => `  prompt ${p.prompt}: first differs at generated token ${p.firstDifference} (ours ${token(p.ours, p.firstDifference!)}, llama.cpp ${token(p.llamaCpp, p.firstDifference!)}); ours [${p.ours.join(', ')}], llama.cpp [${p.llamaCpp.join(', ')}]`)
    .join('\n');
}
