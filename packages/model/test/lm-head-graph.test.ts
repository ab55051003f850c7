import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, int32Data, memoryWeight } from '@expertmesh/tensor-ops';
import { buildLmHeadGraph } from '../src/graphs/lm-head-graph.js';

const config = parseModelConfig(getPreset('tiny').config);

/** The first index of the largest value. */
const firstMax = (values: Float32Array): number => values.indexOf(Math.max(...values));

describe('LM head graph', () => {
  it("gives each row's argmax, the lowest index on ties", async () => {
    const H = config.hiddenSize;
    const V = config.vocabSize;
    let seed = 7;
    const lmHead = Float32Array.from({ length: V * H }, () => ((seed = (seed * 48271) % 2147483647) / 2147483647 - 0.5) * 0.1);
    // Rows 300 and 10 identical and strongest for the first input: an exact tie at the maximum.
    for (const row of [300, 10]) lmHead.fill(0.5, row * H, (row + 1) * H);
    const graph = await Graph.create('lm_head', buildLmHeadGraph(config, new Float32Array(H).fill(1), memoryWeight(lmHead, [V, H])));
    try {
      const x = Float32Array.from({ length: 3 * H }, (_, i) => (i < H ? 1 : Math.sin(i)));
      const out = await graph.run({ x: f32(x, [3, H]) });
      const logits = floatData(out.logits, 'lm_head', 'logits');
      const ids = int32Data(out.argmax, 'lm_head', 'argmax');
      expect(ids[0]).toBe(10);
      for (let r = 0; r < 3; r++) expect(ids[r]).toBe(firstMax(logits.subarray(r * V, (r + 1) * V)));
    } finally {
      await graph.release();
    }
  });
});
