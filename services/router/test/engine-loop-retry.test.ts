import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Engine, GenerationRequest } from '@expertmesh/engine';
import { EngineLoop } from '../src/serving/engine-loop.js';

/**
 * An engine whose step fails (no holder for an expert) until `holderBack`, then generates one token
 * and finishes: what the loop does between the two is the subject here.
 */
function engineWaitingForAHolder() {
  const sequence = { outputTokenIds: [] as number[], logprobs: [], isFinished: false, finishReason: null as 'length' | null, cachedPromptTokens: 0 };
  const state = { holderBack: false, attempts: 0, submitted: false };
  const engine = {
    get hasWork() {
      return state.submitted && !sequence.isFinished;
    },
    numWaiting: 0,
    get numRunning() {
      return state.submitted && !sequence.isFinished ? 1 : 0;
    },
    submit: (_r: GenerationRequest) => {
      state.submitted = true;
      return sequence;
    },
    abort: () => undefined,
    step: async () => {
      state.attempts++;
      if (!state.holderBack) throw new Error('no live shard holds expert 13 of layer 1: waiting for a holder to (re)join');
      sequence.outputTokenIds.push(7);
      sequence.isFinished = true;
      sequence.finishReason = 'length';
      return [];
    },
  };
  return { engine: engine as unknown as Engine, state };
}

/** Lets real callbacks (I/O, setImmediate) run `rounds` times; the back-off's timers are fake and never fire. */
const settle = async (until: () => boolean, rounds = 200): Promise<void> => {
  for (let i = 0; i < rounds && !until(); i++) await new Promise((r) => setImmediate(r));
};

describe('the engine loop waiting for a holder', () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
  afterEach(() => void vi.useRealTimers());

  it('retries a failed step as soon as a holder is back (retryNow), not at the end of its back-off', async () => {
    const { engine, state } = engineWaitingForAHolder();
    const loop = new EngineLoop(engine, { maxWaiting: 4, retryForMs: 60_000 });
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const tokens: number[] = [];
      let finished = false;
      void (async () => {
        for await (const event of loop.submit({ promptTokenIds: [1, 2], maxTokens: 1, sampling: { temperature: 0 } } as unknown as GenerationRequest)) tokens.push(...event.tokenIds);
        finished = true;
      })();
      await settle(() => state.attempts === 1);
      expect(state.attempts).toBe(1);
      // Its back-off (fake time) never ends by itself here: without retryNow the request would wait.
      await settle(() => false, 20);
      expect({ attempts: state.attempts, finished }).toEqual({ attempts: 1, finished: false });
      state.holderBack = true;
      loop.retryNow();
      await settle(() => finished);
      expect({ attempts: state.attempts, finished, tokens }).toEqual({ attempts: 2, finished: true, tokens: [7] });
    } finally {
      stderr.mockRestore();
      const stopped = loop.stop();
      vi.runOnlyPendingTimers();
      await stopped;
    }
  });

  it('retryNow does nothing when no step is waiting', async () => {
    const { engine, state } = engineWaitingForAHolder();
    const loop = new EngineLoop(engine, { maxWaiting: 4, retryForMs: 60_000 });
    loop.retryNow();
    expect(state.attempts).toBe(0);
    await loop.stop();
  });
});
