import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, i64, memoryWeight, type SwigluWeights } from '@expertmesh/tensor-ops';
import { buildRoutedExpertsGraph } from '../src/routed-experts-graph.js';

/**
 * The work of real-width-experts.test.ts that holds its thread: building and running a graph of 32 DeepSeek-R1-size
 * experts (onnxruntime-node creates the session on the calling thread, over a minute on a busy machine). The test
 * runs it on a worker thread (test/helpers/off-thread.ts) and checks the outputs on its own.
 */
const r1 = parseModelConfig(getPreset('r1-slice').config);
export const H = r1.hiddenSize;
export const I = r1.moeIntermediateSize;
export const EXPERTS = 32;

/** Weight value of row r, column c: multiples of 1/4096 in [-1/32, 1/32). */
export const pattern = (r: number, c: number): number => (((r * 31 + c * 17) % 251) - 125) / 4096;
export const input = Float32Array.from({ length: H }, (_, i) => Math.sin(i * 0.37));
/** The experts that get a row (one each): 3, 11, 19, 27. */
export const used = (e: number): boolean => e % 8 === 3;

/** y of the layer for the used experts' rows (each `input`), in expert order. */
export async function runExpertsLayer(): Promise<Float32Array> {
  // One set of values serves all 32 experts (the graph still holds 32 × 3 weights): the test needs 176 MB, not 5.6 GB.
  const gate = new Float32Array(I * H).map((_, i) => pattern(Math.floor(i / H), i % H));
  const down = new Float32Array(H * I).map((_, i) => pattern(Math.floor(i / I) + 7, i % I));
  const weights: SwigluWeights = { gate: memoryWeight(gate, [I, H]), up: memoryWeight(gate, [I, H]), down: memoryWeight(down, [H, I]), hidden: H, intermediate: I };
  const experts = Array.from({ length: EXPERTS }, (_, id) => ({ id, weights }));
  const graph = await Graph.create('experts', buildRoutedExpertsGraph(experts, H, 'experts'));
  try {
    // The used experts' rows, one after another, and each expert's row count.
    const usedCount = experts.filter(({ id }) => used(id)).length;
    const x = new Float32Array(usedCount * H);
    for (let k = 0; k < usedCount; k++) x.set(input, k * H);
    const rows = i64(BigInt64Array.from({ length: EXPERTS }, (_, e) => (used(e) ? 1n : 0n)), [EXPERTS]);
    return floatData((await graph.run({ x: f32(x, [usedCount, H]), rows })).y, 'experts', 'y');
  } finally {
    await graph.release();
  }
}
