import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { loadEngineWith } from '../../../test/helpers/engine.js';
import { deferred, InterceptedExperts } from '../../../test/helpers/intercepted-experts.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { GREEDY, type Engine, type GenerationRequest, type Sequence } from '../src/index.js';

/**
 * Step boundaries: changes asked for while a step runs wait for its end; a step that fails part-way
 * commits nothing and runs again to exactly the result of an undisturbed run. The tiny model has
 * MoE layers 1 and 2, so each step calls the experts twice, and the second call comes after two
 * layers have written this step's rows into the cache.
 */
describe('step boundaries', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('step-boundary');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 9 });
  });
  afterAll(async () => dir?.remove());

  const open = async (before: (call: number, layer: number) => Promise<void> | void = () => undefined): Promise<{ engine: Engine; experts: InterceptedExperts }> => {
    const experts = new InterceptedExperts(await loadLocalExperts(dir.path, await loadModelConfig(dir.path), DEFAULT_EXECUTION), before);
    return { engine: await loadEngineWith(dir.path, experts, { kvCacheTokens: 512, maxBatchedTokens: 8 }), experts };
  };
  const request = (prompt: number[], extra: Partial<GenerationRequest> = {}): GenerationRequest => ({ promptTokenIds: prompt, maxTokens: 8, sampling: GREEDY, ignoreEos: true, ...extra });
  const state = (s: Sequence) => ({ computed: s.computedTokens, outputs: [...s.outputTokenIds], logits: s.logits.length, blocks: [...s.blockTable.blocks], finish: s.finishReason });

  it('an abort during a step takes effect at its end: blocks stay reserved while it runs, the aborted sequence gets nothing from it, the others are unaffected', async () => {
    const reachedGate = deferred();
    const release = deferred();
    let armed = false;
    const { engine, experts } = await open(async (_call, layer) => {
      if (armed && layer === 2) {
        armed = false;
        reachedGate.resolve();
        await release.promise;
      }
    });
    try {
      const a = engine.submit(request([5, 6, 7]));
      const b = engine.submit(request([9, 10, 11, 12]));
      while (a.outputTokenIds.length < 2 || b.outputTokenIds.length < 2) await engine.step();

      armed = true;
      const running = engine.step();
      await reachedGate.promise;
      // Mid-step: the cache rows of this step's tokens are written up to layer 2.
      const usage = engine.kvCacheUsage;
      const before = state(a);
      engine.abort(a);
      const c = engine.submit(request([20, 21]));
      expect(engine.stepInFlight).toBe(true);
      expect(state(a)).toEqual(before);
      expect(a.isFinished).toBe(false);
      expect(engine.kvCacheUsage).toBe(usage);
      expect(engine.numRunning).toBe(2);
      expect(engine.numWaiting).toBe(1);
      release.resolve();
      await running;

      expect(engine.stepInFlight).toBe(false);
      expect(a.finishReason).toBe('abort');
      expect(a.outputTokenIds).toEqual(before.outputs);
      expect(a.computedTokens).toBe(before.computed);
      expect(a.blockTable.blocks).toEqual([]);
      expect(engine.kvCacheUsage).toBeLessThan(usage);
      expect(c.computedTokens).toBe(0);
      expect(b.outputTokenIds.length).toBe(3);

      while (engine.hasWork) await engine.step();
      const [bAlone, cAlone] = await engine.generate([request([9, 10, 11, 12]), request([20, 21])]);
      expect(b.outputTokenIds).toEqual(bAlone!.tokenIds);
      expect(c.outputTokenIds).toEqual(cAlone!.tokenIds);
      expect(experts.calls).toBeGreaterThan(0);
      expect(engine.kvCacheUsage).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('an abort between steps frees the sequence at once', async () => {
    const { engine } = await open();
    try {
      const a = engine.submit(request([1, 2, 3]));
      await engine.step();
      expect(engine.kvCacheUsage).toBeGreaterThan(0);
      engine.abort(a);
      expect(a.finishReason).toBe('abort');
      expect(engine.kvCacheUsage).toBe(0);
      expect(engine.hasWork).toBe(false);
    } finally {
      await engine.close();
    }
  });

  it('a step that fails part-way commits nothing; run again it gives the tokens, logits and sampled draws of an undisturbed run', async () => {
    const requests = [
      request([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], { captureLogits: true }),
      request([2, 7, 1, 8], { captureLogits: true, sampling: { temperature: 1, topP: 0.9, topK: 0, seed: 7 } }),
    ];
    const clean = await open();
    const expected = await clean.engine.generate(requests).finally(() => clean.engine.close());

    // Fail in the first (prefill) step and in a later decode step, both at the second MoE layer.
    const failAt = new Set([2, 10]);
    const { engine } = await open((call) => {
      if (failAt.has(call)) throw new Error(`injected failure at experts call ${call}`);
    });
    try {
      const seqs = requests.map((r) => engine.submit(r));
      let failures = 0;
      while (seqs.some((s) => !s.isFinished)) {
        const before = seqs.map(state);
        const err = await engine.step().then(
          () => null,
          (e: unknown) => e as Error,
        );
        if (err) {
          failures++;
          expect(err.message).toMatch(/injected failure/);
          // Planning may admit a waiting sequence (reserve its blocks); nothing else moved.
          seqs.map(state).forEach((after, i) => {
            const b = before[i]!;
            expect({ ...after, blocks: null }).toEqual({ ...b, blocks: null });
            if (b.blocks.length > 0) expect(after.blocks).toEqual(b.blocks);
          });
        }
      }
      expect(failures).toBe(2);
      seqs.forEach((s, i) => {
        expect(s.outputTokenIds).toEqual(expected[i]!.tokenIds);
        expect(s.logits).toEqual(expected[i]!.logits);
      });
    } finally {
      await engine.close();
    }
  });
});
