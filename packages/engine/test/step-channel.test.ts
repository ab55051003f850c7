import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { loadEngineWith } from '../../../test/helpers/engine.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { GREEDY, STEP_CHANNEL, type StepReport } from '../src/index.js';

/** Every step is reported on STEP_CHANNEL while someone listens: when, how long, and what it held. */
describe('the engine step channel', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('step-channel');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 5 });
  });
  afterAll(async () => dir?.remove());

  it('reports each step with its prefill and decode tokens, and nothing once the listener is gone', async () => {
    const experts = await loadLocalExperts(dir.path, await loadModelConfig(dir.path), DEFAULT_EXECUTION);
    // maxBatchedTokens 4: the 6-token prompt is prefilled in two chunks (4 + 2), then one token per step.
    const engine = await loadEngineWith(dir.path, experts, { kvCacheTokens: 256, maxBatchedTokens: 4 });
    const reports: StepReport[] = [];
    const listener = (message: unknown): void => void reports.push(message as StepReport);
    subscribe(STEP_CHANNEL, listener);
    try {
      const before = Date.now();
      const seq = engine.submit({ promptTokenIds: [3, 4, 5, 6, 7, 8], maxTokens: 3, sampling: GREEDY, ignoreEos: true });
      while (!seq.isFinished) await engine.step();
      // Prompt chunks 4 and 2 (the second samples the first token), then two decode steps of one token.
      expect(reports.map((r) => [r.tokens, r.prefillTokens, r.sequences])).toEqual([
        [4, 4, 1],
        [2, 2, 1],
        [1, 0, 1],
        [1, 0, 1],
      ]);
      for (const r of reports) {
        expect(r.at).toBeGreaterThanOrEqual(before - 1);
        expect(r.at).toBeLessThanOrEqual(Date.now() + 1);
        expect(r.executeMs).toBeGreaterThan(0);
        expect(r.commitMs).toBeGreaterThanOrEqual(0);
      }
      // Steps follow one another: each begins after the previous one's execute and commit.
      for (let i = 1; i < reports.length; i++) expect(reports[i]!.at).toBeGreaterThanOrEqual(reports[i - 1]!.at + reports[i - 1]!.executeMs + reports[i - 1]!.commitMs - 1);
    } finally {
      unsubscribe(STEP_CHANNEL, listener);
    }
    const count = reports.length;
    const again = engine.submit({ promptTokenIds: [9, 10], maxTokens: 2, sampling: GREEDY, ignoreEos: true });
    while (!again.isFinished) await engine.step();
    expect(reports).toHaveLength(count);
    await engine.close();
  });
});
