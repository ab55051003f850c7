import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { MemoryRegistry, planPlacement, RegistryServer } from '@expertmesh/discovery';
import { GREEDY, type GenerationRequest } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity, type CheckpointIdentity } from '@expertmesh/model-weights';
import { EngineLoop, openExperts } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { CLI } from '../helpers/cli.js';
import { loadEngineWith, loadLocalEngine } from '../helpers/engine.js';
import { InterceptedExperts } from '../helpers/intercepted-experts.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

/**
 * A shard process dies in the middle of a step (after the step's first MoE layer went through it):
 * the step fails, the engine loop retries it, a replacement shard takes the dead one's plan slot,
 * and every request ends with exactly the tokens of an undisturbed in-process run.
 */
describe('a shard that dies mid-step', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let identity: CheckpointIdentity;
  const registry = new MemoryRegistry();
  let server: RegistryServer;
  beforeAll(async () => {
    dir = await tempDir('step-retry');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 13 });
    identity = await readCheckpointIdentity(dir.path);
    server = await RegistryServer.start(registry);
    await registry.putPlan(planPlacement({ config: identity.config, modelFingerprint: identity.fingerprint, version: 1, slots: ['shard-0', 'shard-1'], bytesPerExpert: 1 }));
  });
  afterAll(async () => {
    await server?.close();
    await registry.close();
    await dir?.remove();
  });

  const startReplacement = (slot: string): { process: ChildProcess; listening: Promise<void> } => {
    const child = spawnTiedToTest(process.execPath, [CLI, 'shard', '--model', dir.path, '--registry', server.url, '--slot', slot, '--shard-id', slot, '--listen', '127.0.0.1:0', '--intra-op-threads', '1'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, EXPERTMESH_REGISTRY_TOKEN: server.token },
    });
    const listening = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => (JSON.parse(l) as { event?: string }).event === 'listening' && resolve());
      child.once('exit', (code) => reject(new Error(`replacement shard exited (${code})`)));
    });
    return { process: child, listening };
  };

  it('fails the step, retries it once a replacement holds the experts, and loses nothing', async () => {
    const requests: GenerationRequest[] = Array.from({ length: 3 }, (_, i) => ({ promptTokenIds: [i + 3, 2 * i + 1, 7], maxTokens: 12, sampling: GREEDY, ignoreEos: true }));
    const local = await loadLocalEngine(dir.path, { kvCacheTokens: 2048 });
    const expected = await local.generate(requests).finally(() => local.close());

    const cluster = await LocalCluster.start({ modelDir: dir.path, shards: 2, nRoutedExperts: identity.config.nRoutedExperts, registry: { url: server.url }, env: { EXPERTMESH_REGISTRY_TOKEN: server.token }, shardArgs: ['--intra-op-threads', '1', '--lease-ttl', '30'] });
    let replacement: ReturnType<typeof startReplacement> | null = null;
    let killedAtCall = 0;
    try {
      const remote = await openExperts({ kind: 'registry', registry }, { ...identity, modelDir: dir.path }, DEFAULT_EXECUTION);
      for (let i = 0; (await remote.notReadyReason()) !== null; i++) {
        if (i > 600) throw new Error('shards never held every expert');
        await new Promise((r) => setTimeout(r, 50));
      }
      // The 7th experts call is the second MoE layer of the 4th step: the step's first layer already went through both shards.
      const experts = new InterceptedExperts(remote, async (call) => {
        if (call !== 7) return;
        const victim = cluster.shards[1]!.process;
        victim.kill('SIGKILL');
        await new Promise((r) => victim.once('exit', r));
        killedAtCall = call;
        replacement = startReplacement('shard-1');
      });
      const engine = await loadEngineWith(dir.path, experts, { kvCacheTokens: 2048 });
      const loop = new EngineLoop(engine, { maxWaiting: 16, retryForMs: 60_000 });
      try {
        const outputs = await Promise.all(
          requests.map(async (r) => {
            const tokens: number[] = [];
            for await (const event of loop.submit(r)) tokens.push(...event.tokenIds);
            return tokens;
          }),
        );
        expect(killedAtCall).toBe(7);
        expect(loop.stepFailures).toBeGreaterThanOrEqual(1);
        expect(outputs).toEqual(expected.map((e) => e.tokenIds));
      } finally {
        await loop.stop();
        await engine.close();
      }
    } finally {
      const r = replacement as ReturnType<typeof startReplacement> | null;
      if (r) {
        await r.listening.catch(() => undefined);
        r.process.kill('SIGTERM');
        if (r.process.exitCode === null) await new Promise((done) => r.process.once('exit', done));
      }
      await cluster.stop();
    }
  });
});
