import type { Engine } from '@expertmesh/engine';
import { GREEDY } from '@expertmesh/engine';

export const PROMPT_TOKENS = 128;
export const DECODE_STEPS = 16;

export interface DecodeRun {
  readonly batch: number;
  /** Tokens generated during the timed decode steps (sequences that finished early count less). */
  readonly decodeTokens: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly decodeStepMs: number;
}

/** The deterministic prompts every decode benchmark uses: `batch` of `tokens` ids from a seeded generator. */
export function benchPrompts(batch: number, seed: number, vocab: number, tokens: number): number[][] {
  let s = seed;
  return Array.from({ length: batch }, () => Array.from({ length: tokens }, () => (s = (s * 48271) % 2147483647) % vocab));
}

/**
 * `batch` prompts of PROMPT_TOKENS tokens: times the prefill (until every sequence has its first
 * token), then DECODE_STEPS decode steps. `onDecodeStart` runs between the two (reset counters there).
 */
export async function runDecode(
  engine: Engine,
  batch: number,
  seed: number,
  onDecodeStart: () => void = () => undefined,
  lengths: { promptTokens: number; decodeSteps: number; prefillSteps?: number } = { promptTokens: PROMPT_TOKENS, decodeSteps: DECODE_STEPS },
  /** Runs right after the timed decode steps, before the rest is drained (read counters there). */
  onDecodeEnd: () => void = () => undefined,
): Promise<DecodeRun> {
  const { promptTokens, decodeSteps } = lengths;
  // Sequences whose prompts finish early start decoding while others still prefill: give them room so
  // that every sequence still runs in each timed step.
  const headStart = lengths.prefillSteps ?? 0;
  const sequences = benchPrompts(batch, seed, engine.config.vocabSize, promptTokens).map((promptTokenIds) =>
    engine.submit({
      promptTokenIds,
      maxTokens: decodeSteps + 2 + headStart,
      sampling: GREEDY,
      ignoreEos: true,
    }),
  );
  const t0 = performance.now();
  while (sequences.some((q) => q.outputTokenIds.length === 0)) await engine.step();
  const prefillSeconds = (performance.now() - t0) / 1000;
  onDecodeStart();
  const produced = (): number => sequences.reduce((a, q) => a + q.outputTokenIds.length, 0);
  const before = produced();
  const t1 = performance.now();
  for (let i = 0; i < decodeSteps; i++) await engine.step();
  const seconds = (performance.now() - t1) / 1000;
  const decodeTokens = produced() - before;
  onDecodeEnd();
  while (engine.hasWork) await engine.step();
  return { batch, decodeTokens, prefillTokensPerSecond: (batch * promptTokens) / prefillSeconds, decodeTokensPerSecond: decodeTokens / seconds, decodeStepMs: (seconds * 1000) / decodeSteps };
}
