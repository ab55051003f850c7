import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY } from '@expertmesh/engine';
import { NoHolderError } from '@expertmesh/router';
import { startDistributed } from '../helpers/cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

describe('a shard that dies', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('shard-dies');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 4 });
  });
  afterAll(async () => dir?.remove());

  it('fails the step with an error naming the shard, promptly, and leaves the step retryable', async () => {
    const d = await startDistributed(dir.path, 2);
    try {
      const seq = d.engine.submit({ promptTokenIds: [1, 2, 3], maxTokens: 500, sampling: GREEDY, ignoreEos: true });
      for (let i = 0; i < 3; i++) await d.engine.step();
      const before = { computed: seq.computedTokens, outputs: seq.outputTokenIds.length };
      const victim = d.cluster.shards[1]!;
      victim.process.kill('SIGKILL');
      await new Promise((r) => victim.process.once('exit', r));
      const started = Date.now();
      const err = await d.engine.step().then(
        () => null,
        (e: unknown) => e,
      );
      // Its experts have no other holder: the step fails, naming the expert and the shard that failed.
      expect(err).toBeInstanceOf(NoHolderError);
      expect((err as Error).message).toContain(victim.address);
      expect(d.experts.isSuspect(d.experts.connections().find((c) => c.address === victim.address)!)).toBe(true);
      expect(Date.now() - started).toBeLessThan(10_000);
      // Nothing of the sequence moved: the failed step can run again once the experts have a holder.
      expect({ computed: seq.computedTokens, outputs: seq.outputTokenIds.length }).toEqual(before);
    } finally {
      await d.stop();
    }
  });
});
