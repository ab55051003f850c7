import type { Engine } from '@expertmesh/engine';
import { GREEDY } from '@expertmesh/engine';

export const PROMPT_TOKENS = 128;
export const DECODE_STEPS = 16;

export interface DecodeRun {
  readonly batch: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly decodeStepMs: number;
}

/**
 * `batch` prompts of PROMPT_TOKENS tokens: times the prefill (until every sequence has its first
 * token), then DECODE_STEPS decode steps. `onDecodeStart` runs between the two (reset counters there).
 */
export async function runDecode(engine: Engine, batch: number, seed: number, onDecodeStart: () => void = () => undefined): Promise<DecodeRun> {
  let s = seed;
  const vocab = engine.config.vocabSize;
  const sequences = Array.from({ length: batch }, () =>
    engine.submit({
      promptTokenIds: Array.from({ length: PROMPT_TOKENS }, () => (s = (s * 48271) % 2147483647) % vocab),
      maxTokens: DECODE_STEPS + 2,
      sampling: GREEDY,
      ignoreEos: true,
    }),
  );
  const t0 = performance.now();
  while (sequences.some((q) => q.outputTokenIds.length === 0)) await engine.step();
  const prefillSeconds = (performance.now() - t0) / 1000;
  onDecodeStart();
  const t1 = performance.now();
  for (let i = 0; i < DECODE_STEPS; i++) await engine.step();
  const stepSeconds = (performance.now() - t1) / 1000 / DECODE_STEPS;
  while (engine.hasWork) await engine.step();
  return { batch, prefillTokensPerSecond: (batch * PROMPT_TOKENS) / prefillSeconds, decodeTokensPerSecond: batch / stepSeconds, decodeStepMs: stepSeconds * 1000 };
}
