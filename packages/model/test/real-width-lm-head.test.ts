import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseModelConfig, getPreset } from '@expertmesh/model-config';
import { f32, floatData, Graph, int32Data, memoryWeight, type WeightData } from '@expertmesh/tensor-ops';
import { float32ToBf16 } from '@expertmesh/weights';
import { buildLmHeadGraph } from '../src/graphs/lm-head-graph.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/**
 * DeepSeek-R1's LM head at its real size (129280 × 7168), past protobuf's 2 GB limit in float32: stored
 * as BF16 and held as float32. Weights follow a cheap pattern so the expected logits can be computed
 * exactly in float64.
 */
const r1 = parseModelConfig(getPreset('r1-slice').config);
const V = r1.vocabSize;
const H = r1.hiddenSize;
const GiB = 2 ** 30;

/** Weight value of row r, column c: multiples of 1/4096 in [-1/32, 1/32), exact in BF16. */
const pattern = (r: number, c: number): number => (((r * 31 + c * 17) % 251) - 125) / 4096;

function rmsNormed(x: Float32Array): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + r1.rmsNormEps);
  return Float64Array.from(x, (v) => v * inv);
}

function expectLogits(logits: Float32Array, x: Float32Array, rows: readonly number[]): void {
  const xn = rmsNormed(x);
  for (const r of rows) {
    let y = 0;
    for (let c = 0; c < H; c++) y += xn[c]! * pattern(r, c);
    expect(Math.abs(logits[r]! - y)).toBeLessThan(1e-4 * Math.max(1, Math.abs(y)));
  }
}

/** The lowest index of the largest value. */
function firstMaxIndex(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/**
 * Calls fill(r0, r1) for the rows of the head by runs of 4096 (29M values), with a turn of the event loop
 * between them: the whole head (926M values) takes 15–20 s to fill, which in one piece stalls this test
 * worker's calls to its runner (they time out after 60 s on a busy machine).
 */
async function byRowChunks(fill: (r0: number, r1: number) => void): Promise<void> {
  for (let r0 = 0; r0 < V; r0 += 4096) {
    fill(r0, Math.min(V, r0 + 4096));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

const input = Float32Array.from({ length: H }, (_, i) => Math.sin(i * 0.37));
const sampleRows = [0, 1, 4095, 4096, 64_639, 64_640, 100_000, V - 1];

describe("R1's LM head (129280 × 7168)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('lm-head');
  });
  afterAll(async () => dir?.remove());

  it('stored as BF16 (1.85 GB): mapped from its file, widened by chunks of rows, no float32 copy of the head', async () => {
    const codes = new Uint16Array(V * H);
    const table = Uint16Array.from({ length: 251 }, (_, k) => float32ToBf16((k - 125) / 4096));
    await byRowChunks((r0, r1) => {
      for (let r = r0, i = r0 * H; r < r1; r++) for (let c = 0; c < H; c++, i++) codes[i] = table[(r * 31 + c * 17) % 251]!;
    });
    const path = join(dir.path, 'lm_head.bin');
    await writeFile(path, codes);
    const head: WeightData = { kind: 'file', dtype: 'bfloat16', dims: [V, H], file: { path, offset: 0, length: codes.byteLength }, scales: null };
    const before = process.memoryUsage().rss;
    const graph = await Graph.create('lm_head', buildLmHeadGraph(r1, new Float32Array(H).fill(1), head));
    try {
      const out = await graph.run({ x: f32(input, [1, H]) });
      const logits = floatData(out.logits, 'lm_head', 'logits');
      expect(logits.length).toBe(V);
      expectLogits(logits, input, sampleRows);
      // Rows repeat every 251, so the maximum recurs in every chunk: the graph's argmax is the first of them.
      expect(int32Data(out.argmax, 'lm_head', 'argmax')[0]).toBe(firstMaxIndex(logits));
      // The mapped BF16 head (1.85 GB) is resident now; a float32 copy would add 3.7 GB.
      const grown = process.memoryUsage().rss - before;
      console.log(`BF16 LM head: resident memory grew ${(grown / GiB).toFixed(2)} GiB for ${(codes.byteLength / GiB).toFixed(2)} GiB of weights`);
      expect(grown).toBeLessThan(codes.byteLength + 1 * GiB);
    } finally {
      await graph.release();
    }
  });

  it('held as float32 (3.7 GB): fed to the graph, not baked into the model bytes', async () => {
    const values = new Float32Array(V * H);
    await byRowChunks((r0, r1) => {
      for (let r = r0, i = r0 * H; r < r1; r++) for (let c = 0; c < H; c++, i++) values[i] = pattern(r, c);
    });
    const graph = await Graph.create('lm_head', buildLmHeadGraph(r1, new Float32Array(H).fill(1), memoryWeight(values, [V, H])));
    try {
      const x = new Float32Array(2 * H);
      x.set(input);
      x.set(input.map((v) => -2 * v), H);
      const logits = floatData((await graph.run({ x: f32(x, [2, H]) })).logits, 'lm_head', 'logits');
      expectLogits(logits.subarray(0, V), input, sampleRows);
      expectLogits(logits.subarray(V), x.subarray(H), sampleRows);
    } finally {
      await graph.release();
    }
  });
});
