import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry, planPlacement, type PlacementPlan } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from '../helpers/etcd-server.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { startShardProcess } from '../helpers/shard-process.js';
import { completeGreedy, stopAll, firstLogprobOff, switchedPlan, until, type GreedyCompletion } from '../helpers/rebalance-cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = 'elastic';
/** Experts 0, 3, 6, 9 sit on one shard of a three-slot plan, and the gate favours them: skewed load. */
const HOT = [0, 3, 6, 9];
const PROMPTS = ['The cluster', 'Experts move while', 'No request fails when', 'Tokens keep flowing', 'Shards join and leave', 'Load is skewed'];
const MAX_TOKENS = 12;

/** Log-probabilities of the chosen tokens may differ from the run without moves by this much (float32 rounding, see below). */
const LOGPROB_TOLERANCE = 1e-5;

type Completion = GreedyCompletion;
const complete = (url: string, prompt: string): Promise<Completion> => completeGreedy(url, 'demo', prompt, MAX_TOKENS);

/**
 * The closed loop, an elastic join and a leave, against a real etcd with real shard processes and a
 * real router process, under steady load: no request fails, /ready never drops (every expert always
 * has a holder), and every request gets the greedy tokens of a run without rebalancing (a router
 * without the loop, same load, before any move), float32 on the wire both ways. Log-probabilities
 * are compared within LOGPROB_TOLERANCE, not bit for bit: the router adds each token's experts in
 * groups made by the plan in force (one group per shard holding them), so a new plan changes the
 * order of the float32 additions; and onnxruntime rounds a one-row product differently from a
 * batched one, so the batch shapes of concurrent load change the last bits too.
 */
describe('rebalancing and elastic membership under load', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let etcd: EtcdServer;
  let registry: EtcdRegistry;
  let router: Awaited<ReturnType<typeof startServeProcess>>;
  const shards = new Map<string, { address: string; process: ChildProcess; stop: () => Promise<void>; stderr: () => string }>();
  const results: { prompt: string; out: Completion }[] = [];
  /** Per prompt, its completion by a router without rebalancing, under the same concurrent load. */
  const baseline = new Map<string, Completion>();
  const notReady: number[] = [];
  /** Every plan stored, in order, as the registry's watch delivers them. */
  const plans: PlacementPlan[] = [];
  let stopPlans: (() => Promise<void>) | undefined;
  /** The first stored plan `holds` is true of, and the one before it. */
  const planChange = (holds: (p: PlacementPlan) => boolean): { prev: PlacementPlan; next: PlacementPlan } => {
    const k = plans.findIndex(holds);
    expect(k).toBeGreaterThan(0);
    return { prev: plans[k - 1]!, next: plans[k]! };
  };
  const held = (plan: PlacementPlan, slot: string, layer: number): number[] => plan.shards[slot]?.find((l) => l.layer === layer)?.experts ?? [];
  /** Expert copies `slot` holds in `next` that it did not in `prev`. */
  const gained = (prev: PlacementPlan, next: PlacementPlan, slot: string): number => next.shards[slot]!.reduce((a, l) => a + l.experts.filter((e) => !held(prev, slot, l.layer).includes(e)).length, 0);
  const copies = (plan: PlacementPlan, slot: string): number => plan.shards[slot]!.reduce((a, l) => a + l.experts.length, 0);
  let loading = true;
  let load: Promise<void>;

  const metricLines = async (name: string): Promise<string[]> => (await (await fetch(`${router.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith(name));
  const metric = async (name: string): Promise<number> => (await metricLines(`${name} `)).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0);
  const gauge = async (name: string, phase: string): Promise<number[]> => (await metricLines(`${name}{`)).filter((l) => l.includes(`phase="${phase}"`)).map((l) => Number(l.split(' ').at(-1)));
  const switched = (): Promise<PlacementPlan | null> => switchedPlan(registry);
  /** A shard started without --slot: it claims a free slot, or joins as a new one. */
  const startShard = async (): Promise<string> => {
    const s = await startShardProcess(['--model', dir.path, '--cluster', cluster, '--etcd', etcd.url, '--listen', '127.0.0.1:0', '--lease-ttl', '3', '--retire-grace', '2']);
    const slot = (await registry.listShards()).find((r) => r.address === s.address)!.slot;
    shards.set(slot, s);
    return slot;
  };

  beforeAll(async () => {
    dir = await tempDir('elastic');
    await makeCheckpoint({ preset: 'demo', outDir: dir.path, seed: 9, hotExperts: HOT, hotBias: 1 });
    const { config, fingerprint } = await readCheckpointIdentity(dir.path);
    etcd = await EtcdServer.start();
    registry = new EtcdRegistry([etcd.url], cluster);
    await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: ['shard-0', 'shard-1', 'shard-2'], bytesPerExpert: 1 }));
    stopPlans = await registry.watchPlan((p) => void (p && plans.at(-1)?.version !== p.version && plans.push(p)));
    await Promise.all([0, 1, 2].map(() => startShard()));
    const routerArgs = ['--model', dir.path, '--served-model-name', 'demo', '--cluster', cluster, '--etcd', etcd.url, '--wire-dtype', 'float32', '--combine-dtype', 'float32'];
    // The run without rebalancing: a router without the loop, three requests at a time, on the first plan.
    const still = await startServeProcess(routerArgs);
    try {
      await until('router ready', async () => (await fetch(`${still.url}/ready`)).status === 200);
      await Promise.all([0, 1, 2].map(async (w) => {
        for (let i = w; i < PROMPTS.length; i += 3) baseline.set(PROMPTS[i]!, await complete(still.url, PROMPTS[i]!));
      }));
    } finally {
      await still.stop();
    }
    router = await startServeProcess([...routerArgs, '--rebalance-interval', '1s', '--rebalance-threshold', '1.3', '--rebalance-min-tokens', '3000', '--load-window', '30s']);
    await until('router ready', async () => (await fetch(`${router.url}/ready`)).status === 200);
    // Steady load: three requests at a time, prompt after prompt, until the test says stop.
    load = Promise.all(
      [0, 1, 2].map(async (w) => {
        for (let i = w; loading; i += 3) {
          const prompt = PROMPTS[i % PROMPTS.length]!;
          results.push({ prompt, out: await complete(router.url, prompt) });
          if ((await fetch(`${router.url}/ready`)).status !== 200) notReady.push(Date.now());
        }
      }),
    ).then(() => undefined);
  });

  afterAll(async () => {
    loading = false;
    await load?.catch(() => undefined);
    await stopPlans?.();
    await stopAll({ router, shards: shards.values(), registry, etcd, dir });
  });

  it('the closed loop sees the skew, stores a balanced plan, and every shard switches to it', async () => {
    await until('a rebalance', async () => (await metric('expertmesh_rebalances_total')) >= 1);
    const before = Math.max(...(await gauge('expertmesh_expert_imbalance_ratio', 'before')));
    const after = Math.max(...(await gauge('expertmesh_expert_imbalance_ratio', 'after')));
    expect(before).toBeGreaterThan(1.3);
    expect(after).toBeLessThan(before);
    expect(await metric('expertmesh_rebalance_bytes_moved_total')).toBeGreaterThan(0);
    const plan = (await registry.getPlan())!;
    // The hot experts no longer share one shard.
    const layer = Number(Object.keys(plan.basis!.expertLoad!)[0]);
    const hotHolders = new Set(HOT.flatMap((e) => Object.entries(plan.shards).filter(([, ls]) => ls.find((l) => l.layer === layer)!.experts.includes(e)).map(([s]) => s)));
    expect(hotHolders.size).toBeGreaterThan(1);
    await until('every shard switched', async () => (await switched()) !== null);
    await until('switch time observed', async () => (await metric('expertmesh_rebalance_switch_seconds_count')) >= 1);
  });

  it('a shard joining under load gets a slot and work', async () => {
    const before = (await registry.getPlan())!.version;
    const slot = await startShard();
    expect(slot).toBe('shard-3');
    const record = (await registry.listShards()).find((r) => r.slot === slot)!;
    expect(record.layers.reduce((a, l) => a + l.experts.length, 0)).toBeGreaterThan(0);
    await until('every shard switched after the join', async () => {
      const plan = await switched();
      return plan !== null && plan.version > before && slot in plan.shards;
    });
    // The join's re-plan loads experts onto the new slot only: the serving shards give, none of them takes.
    const { prev, next } = planChange((p) => slot in p.shards);
    for (const s of Object.keys(prev.shards)) expect({ s, gained: gained(prev, next, s) }).toEqual({ s, gained: 0 });
    const moved = /joined as new slot shard-3: stored plan v\d+ \((\d+) experts moved/.exec(shards.get(slot)!.stderr());
    expect(Number(moved?.[1])).toBe(copies(next, slot));
  });

  it('a shard sent SIGTERM hands its experts over through a plan change, then drains and exits 0', async () => {
    const leaving = shards.get('shard-1')!;
    const exited = new Promise<number | null>((resolve) => leaving.process.once('exit', (code) => resolve(code)));
    leaving.process.kill('SIGTERM');
    expect(await exited).toBe(0);
    shards.delete('shard-1');
    const plan = (await registry.getPlan())!;
    expect(Object.keys(plan.shards)).not.toContain('shard-1');
    expect((await registry.listShards()).map((r) => r.slot)).not.toContain('shard-1');
    await until('every shard switched after the leave', async () => (await switched()) !== null);
    // The leave's re-plan moves the leaving slot's experts and nothing else: the others keep all they held.
    const { prev, next } = planChange((p) => !('shard-1' in p.shards));
    for (const s of Object.keys(next.shards)) for (const l of prev.shards[s]!) expect({ s, layer: l.layer, kept: l.experts.filter((e) => held(next, s, l.layer).includes(e)) }).toEqual({ s, layer: l.layer, kept: l.experts });
    expect(Object.keys(next.shards).reduce((a, s) => a + gained(prev, next, s), 0)).toBe(copies(prev, 'shard-1'));
    expect((await fetch(`${router.url}/ready`)).status).toBe(200);
  });

  it('under all of it: no request failed, no step was retried, /ready never dropped, and every output is the run without rebalancing\'s', async () => {
    const seen = results.length;
    await until('requests on the final placement', async () => results.length >= seen + 6);
    loading = false;
    await load;
    expect(results.length).toBeGreaterThan(20);
    for (const p of PROMPTS) expect({ p, status: baseline.get(p)?.status, tokens: baseline.get(p)?.tokens.length }).toEqual({ p, status: 200, tokens: MAX_TOKENS });
    for (const { prompt, out } of results) {
      const want = baseline.get(prompt)!;
      expect({ prompt, status: out.status, text: out.text, tokens: out.tokens }).toEqual({ prompt, status: 200, text: want.text, tokens: want.tokens });
      const off = firstLogprobOff(out, want, LOGPROB_TOLERANCE);
      expect({ prompt, off, got: out.logprobs[off], want: want.logprobs[off] }).toEqual({ prompt, off: -1, got: undefined, want: undefined });
    }
    const worst = Math.max(...results.flatMap(({ prompt, out }) => out.logprobs.map((lp, i) => Math.abs(lp - baseline.get(prompt)!.logprobs[i]!))));
    process.stderr.write(`[elastic-rebalance] ${results.length} requests, largest log-probability difference to the run without moves: ${worst}\n`);
    expect(notReady).toEqual([]);
    // No step was retried either: no instant in which the router had no holder it could use for an expert.
    expect(router.stderr().split('\n').filter((l) => l.includes('step failed'))).toEqual([]);
  });
});
