import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY } from '@expertmesh/engine';
import { loadLocalEngine } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * With two micro-batches, a step's trace shows each as a span under the step, holding one attention
 * span per layer: what a waterfall needs to show the two pipelines interleave.
 */
describe('micro-batch spans', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  beforeAll(async () => {
    provider.register();
    dir = await tempDir('micro-batch-spans');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 12 });
  });
  afterAll(async () => {
    await provider.shutdown();
    await dir?.remove();
  });

  it('a decode step of 4 sequences: 2 micro-batch spans under the step, each with an attention span per layer', async () => {
    const engine = await loadLocalEngine(dir.path, { kvCacheTokens: 256, microBatches: 2 });
    try {
      for (let i = 0; i < 4; i++) engine.submit({ promptTokenIds: [3 + i, 9, 27], maxTokens: 2, sampling: GREEDY, ignoreEos: true });
      await engine.step(); // the prompts
      exporter.reset();
      await engine.step(); // one decode token each
    } finally {
      await engine.close();
    }
    const spans = exporter.getFinishedSpans();
    const step = spans.filter((s) => s.name === 'expertmesh.engine.step');
    expect(step).toHaveLength(1);
    expect(step[0]!.attributes['expertmesh.micro_batches']).toBe(2);
    const micro = spans.filter((s) => s.name === 'expertmesh.model.micro_batch');
    expect(micro.map((s) => s.attributes['expertmesh.micro_batch']).sort()).toEqual([0, 1]);
    for (const m of micro) {
      expect(m.parentSpanContext?.spanId).toBe(step[0]!.spanContext().spanId);
      expect(m.attributes['expertmesh.tokens']).toBe(2);
      const layers = spans.filter((s) => s.name === 'expertmesh.model.attention' && s.parentSpanContext?.spanId === m.spanContext().spanId).map((s) => s.attributes['expertmesh.layer']);
      expect(layers).toEqual([0, 1, 2]);
    }
  });
});
