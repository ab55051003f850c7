import { describe, expect, it } from 'vitest';
import type { ModelConfig } from '@expertmesh/model-config';
import { DEFAULT_EXECUTION, memoryWeight, type SwigluWeights } from '@expertmesh/tensor-ops';
import { LocalRoutedExperts, type ExpertWeightSource } from '../src/index.js';

/**
 * A load of large float32 experts holds each expert's weights as read only until its program has its own copy:
 * they are collected before the next group is read, so the load's peak is what it holds plus one group, not
 * (as when V8 collected them in its own time) most of the experts twice.
 */
describe('a load of large experts', () => {
  it('collects each group as read before it reads the next', async () => {
    // 3 · 2048 · 5632 · 4 B = 138 MB an expert: past the bytes a group is collected at (COLLECT_GROUP_BYTES, 128 MiB)
    // and over half a group, so each expert is a group of its own.
    const H = 2048;
    const I = 5632;
    const experts = 3;
    const config = { hiddenSize: H, moeIntermediateSize: I, nRoutedExperts: experts, moeLayers: [1] } as unknown as ModelConfig;
    const read: WeakRef<Float32Array>[] = [];
    const aliveWhenNextRead: boolean[] = [];
    const source: ExpertWeightSource = {
      expertDtype: 'float32',
      routedExpert: async (_layer, expert): Promise<SwigluWeights> => {
        // What V8 has collected by the time the load asks for the next expert (a turn first: WeakRefs hold for a job).
        await new Promise((resolve) => setImmediate(resolve));
        if (expert > 0) aliveWhenNextRead.push(read[expert - 1]!.deref() !== undefined);
        const gate = new Float32Array(I * H).fill(0.01);
        read.push(new WeakRef(gate));
        return { gate: memoryWeight(gate, [I, H]), up: memoryWeight(new Float32Array(I * H).fill(0.02), [I, H]), down: memoryWeight(new Float32Array(H * I).fill(0.03), [H, I]), hidden: H, intermediate: I };
      },
    };
    const set = await LocalRoutedExperts.load(config, source, { ...DEFAULT_EXECUTION, intraOpThreads: 1 });
    try {
      expect(set.graphsOf(1)).toBe(experts);
      expect(aliveWhenNextRead).toEqual([false, false]);
      // The experts still compute from the programs' own copies: 3 rows, one per expert.
      const y = await set.computePairs(1, new Float32Array(3 * H).fill(1), 3, { tokenRows: Int32Array.from([0, 1, 2]), expertIds: Int32Array.from([0, 1, 2]), weights: new Float32Array(3).fill(1) });
      const gate = 0.01 * H;
      const expected = Math.fround(Math.fround(Math.fround(gate / (1 + Math.exp(-gate))) * 0.02 * H) * 0.03 * I);
      expect(Math.abs(y[0]! - expected) / expected).toBeLessThan(1e-3);
    } finally {
      await set.close();
    }
  });
});
