import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY, type GenerationResult } from '@expertmesh/engine';
import { relativeError } from '../helpers/numerics.js';
import { startDistributed } from '../helpers/cluster.js';
import { loadLocalEngine } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * The cluster computes what one process computes: real shard processes on loopback against the
 * in-process engine, on a batch of prompts of mixed lengths.
 */
const MAX_TOKENS = 5;
let seed = 99;
const prompts = [1, 7, 20, 3, 45, 12].map((n) => Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 512));
const requests = prompts.map((p) => ({ promptTokenIds: p, maxTokens: MAX_TOKENS, sampling: GREEDY, ignoreEos: true, captureLogits: true }));

const maxLogitError = (a: readonly GenerationResult[], b: readonly GenerationResult[]): number =>
  Math.max(...a.flatMap((r, i) => r.logits.map((l, s) => relativeError(l, b[i]!.logits[s]!))));

describe('distributed experts equal in-process experts', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let local: GenerationResult[];

  beforeAll(async () => {
    dir = await tempDir('cluster');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, dtype: 'bfloat16', seed: 21 });
    const engine = await loadLocalEngine(dir.path, { kvCacheTokens: 2048, maxBatchedTokens: 32 });
    local = await engine.generate(requests);
    await engine.close();
  });
  afterAll(async () => dir?.remove());

  const exact = [
    { shards: 1, transport: 'stream' },
    { shards: 2, transport: 'stream' },
    { shards: 4, transport: 'stream' },
    { shards: 2, transport: 'unary' },
  ] as const;
  for (const { shards, transport } of exact) {
    it(`${shards} shard(s) over ${transport} calls, float32 on the wire: same greedy tokens, logits within 1e-5`, async () => {
      const d = await startDistributed(dir.path, shards, { wireDtype: 'float32', combineDtype: 'float32', transport }, { maxBatchedTokens: 32 });
      try {
        const remote = await d.engine.generate(requests);
        remote.forEach((r, i) => expect(r.tokenIds).toEqual(local[i]!.tokenIds));
        expect(maxLogitError(remote, local)).toBeLessThan(1e-5);
      } finally {
        await d.stop();
      }
    });
  }

  // Stated tolerances: bfloat16 keeps 8 significant bits (relative step 2^-8 ≈ 4e-3) on the hidden
  // states and sums; fp8 e4m3 keeps 4 (2^-4 with a per-token scale). Errors partly average out
  // through the layers; measured here: 2.4e-3 (bfloat16) and 3.3e-2 (fp8), so the bounds keep a 3-4x margin.
  const tolerances = [
    { wireDtype: 'bfloat16', combineDtype: 'bfloat16', bound: 1e-2 },
    { wireDtype: 'fp8', combineDtype: 'bfloat16', bound: 1e-1 },
  ] as const;
  for (const t of tolerances) {
    it(`2 shards, ${t.wireDtype} dispatch and ${t.combineDtype} combine: logits within ${t.bound} relative of in-process`, async () => {
      const d = await startDistributed(dir.path, 2, { wireDtype: t.wireDtype, combineDtype: t.combineDtype }, { maxBatchedTokens: 32 });
      try {
        // Compare the first step's logits, where both runs see the same prompt (greedy paths may part later).
        const remote = await d.engine.generate(requests.map((r) => ({ ...r, maxTokens: 1 })));
        const err = Math.max(...remote.map((r, i) => relativeError(r.logits[0]!, local[i]!.logits[0]!)));
        expect(err).toBeLessThan(t.bound);
        expect(err).toBeGreaterThan(0); // the lossy wire is really in use
      } finally {
        await d.stop();
      }
    });
  }
});
