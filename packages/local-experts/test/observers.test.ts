import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import type { ExpertRouting, RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { loadLocalExperts } from '../src/index.js';

describe('in-process experts through the backend interface', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let experts: RoutedExpertsBackend;
  beforeAll(async () => {
    dir = await tempDir('local-experts');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 2 });
    config = await loadModelConfig(dir.path);
    experts = await loadLocalExperts(dir.path, config, DEFAULT_EXECUTION);
  });
  afterAll(async () => {
    await experts?.close();
    await dir?.remove();
  });

  const routing = (T: number): ExpertRouting => ({
    numTokens: T,
    topK: 2,
    expertIds: Int32Array.from({ length: 2 * T }, (_, i) => (i * 5) % config.nRoutedExperts),
    weights: new Float32Array(2 * T).fill(0.5),
  });

  it('observers see every layer routing until they unsubscribe, and never a remote call', async () => {
    const seen: [number, ExpertRouting][] = [];
    let calls = 0;
    const stop = experts.observe({ onRouting: (layer, r) => seen.push([layer, r]), onCall: () => calls++ });
    const r = routing(3);
    const out = await experts.compute(config.moeLayers[0]!, new Float32Array(3 * config.hiddenSize).fill(0.1), r);
    expect(out.length).toBe(3 * config.hiddenSize);
    expect(seen).toEqual([[config.moeLayers[0], r]]);
    stop();
    await experts.compute(config.moeLayers[0]!, new Float32Array(3 * config.hiddenSize).fill(0.1), r);
    expect(seen.length).toBe(1);
    expect(calls).toBe(0);
  });

  it('is ready, holds nothing elsewhere and follows no plan', async () => {
    expect(await experts.notReadyReason()).toBeNull();
    expect(await experts.holders(100)).toEqual([]);
    expect(experts.planStatus()).toBeNull();
  });

  it('says how many bytes of expert weights this process holds: every expert of every MoE layer, as BF16', () => {
    // The checkpoint is BF16 and held as stored: gate, up and down of each expert at 2 bytes a weight.
    expect(experts.heldWeightBytes()).toBe(config.moeLayers.length * config.nRoutedExperts * 3 * config.hiddenSize * config.moeIntermediateSize * 2);
  });
});
