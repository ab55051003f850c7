import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { streamCompletion, streamThroughFault, type StreamedCompletion } from '../helpers/completion-stream.js';
import { FailoverCluster } from '../helpers/failover-cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

const PROMPTS = ['The cluster says', 'Once upon a time', 'Experts in a mixture', 'A shard fails and'];
const MAX_TOKENS = 40;

/**
 * Under streaming load, on a real cluster (etcd, three shard processes whose experts are all held
 * twice, a `serve` router): a shard killed or hung mid-stream costs no request, and every stream gets
 * the very tokens of the fault-free run. The hung shard keeps its 60 s lease: the router's own health
 * judgement, not the registry, routes around it.
 */
describe('failover under streaming load', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  /** The checkpoint folder: its name, demo, is the served model's. */
  let model: string;
  let cluster: FailoverCluster;
  let baseline: StreamedCompletion[];

  const underFault = (fault: () => void | Promise<void>): Promise<StreamedCompletion[]> =>
    streamThroughFault(
      cluster.url,
      PROMPTS.map((prompt) => ({ model: 'demo', prompt, max_tokens: MAX_TOKENS })),
      fault,
    );
  const expectLikeBaseline = (results: readonly StreamedCompletion[]): void => {
    results.forEach((r, i) => {
      expect({ error: r.error, done: r.done, finish: r.finishReason }).toEqual({ error: null, done: true, finish: 'length' });
      expect(r.tokens).toEqual(baseline[i]!.tokens);
    });
  };

  beforeAll(async () => {
    dir = await tempDir('cluster-failover');
    model = `${dir.path}/demo`;
    await makeCheckpoint({ preset: 'demo', outDir: model, seed: 17 });
    cluster = await FailoverCluster.start({ modelDir: model, slots: ['s0', 's1', 's2'], redundantExperts: 64, leaseTtlSeconds: 60 });
    baseline = await Promise.all(PROMPTS.map((prompt) => streamCompletion(cluster.url, { model: 'demo', prompt, max_tokens: MAX_TOKENS })));
    for (const b of baseline) expect(b.tokens).toHaveLength(MAX_TOKENS);
  });
  afterAll(async () => {
    await cluster?.stop();
    await dir?.remove();
  });

  it('kill -9 of a shard mid-stream: no request fails, every stream gets the fault-free tokens, the shard is suspect at once', async () => {
    const victim = cluster.shards.get('s1')!;
    const takenOver = async (): Promise<number> =>
      (await cluster.metric('expertmesh_dispatch_resent_calls_total')) + (await cluster.metric('expertmesh_dispatch_hedges_total', { shard: victim.address, outcome: 'won' }));
    const takenOverBefore = await takenOver();
    const results = await underFault(() => victim.signal('SIGKILL'));
    expectLikeBaseline(results);
    expect(await cluster.metric('expertmesh_shard_suspicions_total', { shard: victim.address })).toBeGreaterThanOrEqual(1);
    // Its rows went to the replicas: resent once its calls failed, or, for a call already late (hedged) when it
    // died, by the hedge (a hedge is not counted as resent: on a busy machine any call may be late).
    expect((await takenOver()) - takenOverBefore).toBeGreaterThan(0);
    // Back to full strength for the next test.
    await cluster.startShard('s1');
    await cluster.untilReady();
  });

  it('SIGSTOP of a shard whose 60 s lease lives on: no request fails, same tokens; routed around until its health check passes', async () => {
    const victim = cluster.shards.get('s2')!;
    const results = await underFault(() => victim.signal('SIGSTOP'));
    try {
      expectLikeBaseline(results);
      expect(await cluster.metric('expertmesh_shard_suspicions_total', { shard: victim.address, reason: 'deadline' })).toBe(1);
      expect(await cluster.metric('expertmesh_shard_suspect', { shard: victim.address })).toBe(1);
      // The registry still lists it: its lease has not run out.
      expect((await cluster.registry.listShards()).map((r) => r.shardId)).toContain('s2');
    } finally {
      victim.signal('SIGCONT');
    }
    const deadline = Date.now() + 30_000;
    while ((await cluster.metric('expertmesh_shard_suspect', { shard: victim.address })) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await cluster.metric('expertmesh_shard_suspect', { shard: victim.address })).toBe(0);
  });
});
