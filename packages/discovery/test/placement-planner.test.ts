import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { planPlacement, planShardBytes, PlacementPlanError } from '../src/index.js';

const demo = parseModelConfig(getPreset('demo').config);
const slots = (n: number): string[] => Array.from({ length: n }, (_, i) => `shard-${i}`);

describe('placement planner', () => {
  it('holds every expert exactly once without replicas, evenly spread', () => {
    const plan = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(3), bytesPerExpert: 1 });
    for (const layer of demo.moeLayers) {
      const held = Object.values(plan.shards).flatMap((ls) => ls.find((l) => l.layer === layer)!.experts);
      expect(held.sort((a, b) => a - b)).toEqual(Array.from({ length: 64 }, (_, i) => i));
      const counts = Object.values(plan.shards).map((ls) => ls.find((l) => l.layer === layer)!.experts.length);
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
  });

  it('gives redundant slots to the experts with the most load, on shards that lack them', () => {
    const hot = new Set([5, 17]);
    const plan = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(4), redundantExperts: 2, expertLoad: (_l, e) => (hot.has(e) ? 100 : 1), bytesPerExpert: 1 });
    for (const layer of demo.moeLayers) {
      const holders = (e: number): number => Object.values(plan.shards).filter((ls) => ls.find((l) => l.layer === layer)!.experts.includes(e)).length;
      expect(holders(5)).toBe(2);
      expect(holders(17)).toBe(2);
      expect(holders(0)).toBe(1);
    }
  });

  it('balances load, not just counts', () => {
    const plan = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(2), expertLoad: (_l, e) => (e < 4 ? 50 : 1), bytesPerExpert: 1 });
    const layer = demo.moeLayers[0]!;
    const hotOn = Object.values(plan.shards).map((ls) => ls.find((l) => l.layer === layer)!.experts.filter((e) => e < 4).length);
    expect(hotOn).toEqual([2, 2]);
  });

  it('honours a memory budget or says what to change', () => {
    const perExpert = 2 ** 20;
    const fits = planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(2), bytesPerExpert: perExpert, memoryBudgetBytes: 96 * perExpert });
    expect(Math.max(...Object.values(planShardBytes(fits, perExpert)))).toBe(96 * perExpert);
    expect(() => planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: slots(2), bytesPerExpert: perExpert, memoryBudgetBytes: 95 * perExpert })).toThrow(
      /shard shard-0 needs 96\.0 MiB, .* but the budget is 95\.0 MiB per shard: add shards, add memory/,
    );
    expect(() => planPlacement({ config: demo, modelFingerprint: 'f', version: 1, slots: [], bytesPerExpert: 1 })).toThrow(PlacementPlanError);
  });

  it('plans the real DeepSeek-R1: 58 MoE layers × 256 experts over 32 GPUs', () => {
    const r1 = parseModelConfig(JSON.parse(readFileSync(join(import.meta.dirname, '../../../test/fixtures/deepseek-r1-config.json'), 'utf8')));
    const plan = planPlacement({ config: r1, modelFingerprint: 'f', version: 1, slots: slots(32), redundantExperts: 32, bytesPerExpert: 1 });
    const perShard = Object.values(plan.shards).map((ls) => ls.reduce((a, l) => a + l.experts.length, 0));
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(58 * (256 + 32));
    expect(new Set(perShard)).toEqual(new Set([58 * 9]));
  });
});
