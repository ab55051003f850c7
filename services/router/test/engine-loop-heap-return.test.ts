import { describe, expect, it } from 'vitest';
import type { Engine, GenerationRequest } from '@expertmesh/engine';
import { EngineLoop } from '../src/serving/engine-loop.js';

/** An engine that generates `steps` tokens, one a step, for one request at a time, and counts its steps. */
function countingEngine(steps: number) {
  const state = { steps: 0, submitted: 0 };
  let sequence = { outputTokenIds: [] as number[], logprobs: [], isFinished: true, finishReason: null as 'length' | null, cachedPromptTokens: 0 };
  const engine = {
    get hasWork() {
      return !sequence.isFinished;
    },
    numWaiting: 0,
    get numRunning() {
      return sequence.isFinished ? 0 : 1;
    },
    submit: (_r: GenerationRequest) => {
      state.submitted++;
      sequence = { outputTokenIds: [], logprobs: [], isFinished: false, finishReason: null, cachedPromptTokens: 0 };
      return sequence;
    },
    abort: () => undefined,
    step: async () => {
      state.steps++;
      sequence.outputTokenIds.push(7);
      if (sequence.outputTokenIds.length >= steps) {
        sequence.isFinished = true;
        sequence.finishReason = 'length';
      }
      return [];
    },
  };
  return { engine: engine as unknown as Engine, state };
}

const request = { promptTokenIds: [1, 2], maxTokens: 3, sampling: { temperature: 0 } } as unknown as GenerationRequest;
const drain = async (loop: EngineLoop): Promise<void> => {
  for await (const _ of loop.submit(request));
};
const waitFor = async (until: () => boolean, ms: number): Promise<void> => {
  const end = Date.now() + ms;
  while (!until() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
};

describe('the engine loop returns freed heap pages once idle', () => {
  it('trims once after work, when idle for idleHeapReturnMs, and not again without new steps', async () => {
    const { engine, state } = countingEngine(3);
    const loop = new EngineLoop(engine, { maxWaiting: 4, retryForMs: 1000, idleHeapReturnMs: 20 });
    expect(loop.heapReturns).toBe(0);
    await drain(loop);
    expect(state.steps).toBe(3);
    // Until the return owed for those steps is done. Back-to-back steps make one busy spell; a busy machine that
    // stalls the loop 20 ms between two of them makes two, hence `spells`.
    await waitFor(() => !loop.heapReturnOwed, 10_000);
    const spells = loop.heapReturns;
    expect(spells).toBeGreaterThanOrEqual(1);
    expect(spells).toBeLessThanOrEqual(3);
    expect(loop.lastHeapReturn?.glibc).toBe(true);
    expect(loop.lastHeapReturn?.v8?.done).toBe(true); // V8's young generation shrunk too
    expect(loop.lastHeapReturn!.microseconds).toBeGreaterThan(0);
    // Idle with nothing new: no further trim.
    await new Promise((r) => setTimeout(r, 100));
    expect(loop.heapReturns).toBe(spells);
    // New work, then idle again: one more (a request of 3 steps: at most one per step again).
    await drain(loop);
    await waitFor(() => !loop.heapReturnOwed, 10_000);
    expect(loop.heapReturns).toBeGreaterThan(spells);
    expect(loop.heapReturns).toBeLessThanOrEqual(spells + 3);
    await loop.stop();
  });

  it('does not trim while requests keep coming within the idle time, nor when turned off', async () => {
    const { engine } = countingEngine(2);
    const busy = new EngineLoop(engine, { maxWaiting: 4, retryForMs: 1000, idleHeapReturnMs: 60_000 });
    for (let i = 0; i < 5; i++) await drain(busy);
    expect(busy.heapReturns).toBe(0);
    await busy.stop();
    const off = new EngineLoop(countingEngine(2).engine, { maxWaiting: 4, retryForMs: 1000, idleHeapReturnMs: 0 });
    await drain(off);
    await new Promise((r) => setTimeout(r, 100));
    expect(off.heapReturns).toBe(0);
    await off.stop();
  });
});
