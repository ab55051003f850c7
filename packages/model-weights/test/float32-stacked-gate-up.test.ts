import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { f32, floatData, Graph, OnnxModelBuilder, stackedGateUp, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import { readLinearWeight, SafetensorsCheckpoint } from '@expertmesh/weights';
import { WeightReader } from '../src/index.js';

/**
 * Float32 gate and up are read into the two halves of one array, and the SwiGLU graphs take that array as their
 * stacked [gate; up] weight without copying it: the process never holds a float32 gate or up twice while a graph is
 * built (at R1's widths the copy was 1 GiB for layer 0's MLP, 117 MB per routed expert).
 */
const dirs: string[] = [];
const sources = { fp8: { fp8: true, fp8BlockSize: [32, 24] as [number, number] }, bf16: {}, f32: { dtype: 'float32' as const } };
const opened: Record<string, { checkpoint: SafetensorsCheckpoint; config: ModelConfig }> = {};

beforeAll(async () => {
  for (const [name, options] of Object.entries(sources)) {
    const dir = await mkdtemp(join(tmpdir(), `expertmesh-stacked-${name}-`));
    dirs.push(dir);
    await makeCheckpoint({ preset: 'tiny', outDir: dir, seed: 3, ...options });
    opened[name] = { checkpoint: await SafetensorsCheckpoint.open(dir), config: await loadModelConfig(dir) };
  }
});
afterAll(async () => {
  for (const { checkpoint } of Object.values(opened)) await checkpoint.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const values = (w: WeightData): Float32Array => {
  if (w.kind !== 'memory') throw new Error(`expected float32 in memory, got ${w.kind}`);
  return w.data;
};

/** Whether b starts where a ends, in the same buffer. */
const adjacent = (a: Float32Array, b: Float32Array): boolean => a.buffer === b.buffer && a.byteOffset + a.byteLength === b.byteOffset;

describe('float32 gate and up, stacked by the loader', () => {
  for (const source of Object.keys(sources)) {
    it(`are adjacent halves of one array, each equal to the weight read alone (${source} checkpoint)`, async () => {
      const { checkpoint, config } = opened[source]!;
      const reader = new WeightReader(checkpoint, config, 'float32');
      const dense = await reader.layer(0);
      if (dense.ffn.kind !== 'dense') throw new Error('tiny preset: layer 0 is dense');
      const expert = await reader.routedExpert(config.moeLayers[0]!, 1);
      const blockSize = config.quantization?.weightBlockSize ?? null;
      for (const [w, prefix] of [
        [dense.ffn.mlp, 'model.layers.0.mlp'],
        [expert, `model.layers.${config.moeLayers[0]}.mlp.experts.1`],
      ] as const) {
        const gate = values(w.gate);
        const up = values(w.up);
        expect(adjacent(gate, up)).toBe(true);
        expect(gate.byteOffset).toBe(0);
        expect(gate.buffer.byteLength).toBe(gate.byteLength + up.byteLength);
        expect(Array.from(gate)).toEqual(Array.from(await readLinearWeight(checkpoint, `${prefix}.gate_proj.weight`, blockSize)));
        expect(Array.from(up)).toEqual(Array.from(await readLinearWeight(checkpoint, `${prefix}.up_proj.weight`, blockSize)));
      }
    });
  }

  it('the SwiGLU graph feeds the loader array itself as [gate; up]; apart, a stacked copy gives the same outputs', async () => {
    const { checkpoint, config } = opened.fp8!;
    const w = await new WeightReader(checkpoint, config, 'float32').routedExpert(config.moeLayers[0]!, 2);
    const gate = values(w.gate);
    const up = values(w.up);
    const apart: SwigluWeights = { ...w, gate: { ...w.gate, data: gate.slice() } as WeightData, up: { ...w.up, data: up.slice() } as WeightData };
    const H = w.hidden;
    const x = Float32Array.from({ length: 3 * H }, (_, i) => Math.sin(i * 0.37));
    const outputs: Float32Array[] = [];
    for (const weights of [w, apart]) {
      // No inline budget: the stacked weight is fed at every run, so the graph's own array can be inspected.
      const b = new OnnxModelBuilder('gate_up', { inlineWeightBytes: 0 });
      b.alias(stackedGateUp(b, b.input('x', 'float32', ['M', H]), weights, 'e')!, 'y');
      b.output('y', 'float32', ['M', 2 * w.intermediate]);
      const built = b.build();
      const fed = Object.values(built.fedWeights);
      expect(fed).toHaveLength(1);
      const stacked = fed[0]!.data;
      expect(Array.from(stacked.subarray(0, gate.length))).toEqual(Array.from(gate));
      expect(Array.from(stacked.subarray(gate.length))).toEqual(Array.from(up));
      // The loader's array itself, not a copy (a copy is what apart arrays need).
      expect(stacked.buffer === gate.buffer).toBe(weights === w);
      const graph = await Graph.create('gate_up', built);
      try {
        outputs.push(floatData((await graph.run({ x: f32(x, [3, H]) })).y, 'gate_up', 'y'));
      } finally {
        await graph.release();
      }
    }
    expect(Array.from(outputs[0]!)).toEqual(Array.from(outputs[1]!));
  });
});
