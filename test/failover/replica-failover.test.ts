import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { GREEDY, type Engine, type GenerationRequest } from '@expertmesh/engine';
import { loadShardCompute, parseExpertSpec, ShardCompute, ShardServer } from '@expertmesh/expert-shard';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall, DispatchHedge, HolderHealthChange } from '@expertmesh/routed-experts';
import { connectToShards, type HedgePolicy, type RemoteRoutedExperts } from '@expertmesh/router';
import type { RunExpertsRequest__Output } from '@expertmesh/wire';
import { loadEngineWith } from '../helpers/engine.js';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * A router engine in this process over three real shard processes on loopback, every expert held
 * twice (A: 0-7, B: 8-15, C: all). A shard that dies, hangs or returns garbage mid-generation costs
 * no step: every greedy token is the fault-free run's, and every logit too, up to the last float32 bits
 * (onnxruntime's single-row product kernel rounds differently from its batched one, and moving rows
 * to replicas changes how many rows an expert gets in a call).
 */
const requests: GenerationRequest[] = [1, 6, 13, 3, 9, 2].map((n, i) => ({
  promptTokenIds: Array.from({ length: n }, (_, j) => (i * 71 + j * 13) % 512),
  maxTokens: 14,
  sampling: GREEDY,
  ignoreEos: true,
  captureLogits: true,
}));
const DEADLINE = { minMs: 150, maxMs: 10_000, p99Multiple: 4 };
const FAULT_STEP = 6;

/** Logits may differ from the fault-free run's by this much, relative (float32 rounding, see above). */
const LOGIT_TOLERANCE = 1e-5;

/**
 * What happened in a run, each event with its step (0-based): the step a call was sent in (a hedged
 * call's discarded answer may come during the next step), the step during which a health change or a
 * hedge happened.
 */
interface Run {
  readonly tokens: number[][];
  readonly logits: Float32Array[][];
  readonly calls: { step: number; call: DispatchCall }[];
  readonly health: (HolderHealthChange & { readonly step: number })[];
  readonly hedges: (DispatchHedge & { readonly step: number })[];
  readonly failedSteps: number;
}

/**
 * Whether `shard`'s rows went to other holders during `step` because its call failed: resent, or by a
 * hedge of its call that won (the call was late, then failed). Hedges of a merely late call, on a busy
 * machine, are neither failures nor resends: calls report them as `hedge`, not `resent`.
 */
const takenOverIn = (run: Run, shard: string, step: number): boolean =>
  run.calls.some((x) => x.step === step && x.call.resent && x.call.shard !== shard) || run.hedges.some((h) => h.step === step && h.shard === shard && h.outcome === 'won');

describe('failover to replicas in the same step', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let a: ShardProcess;
  let b: ShardProcess;
  let baseline: Run;
  const started: ShardProcess[] = [];
  const shard = async (experts: string): Promise<ShardProcess> => {
    const s = await startShardProcess(['--model', dir.path, '--experts', experts, '--listen', '127.0.0.1:0']);
    started.push(s);
    return s;
  };

  /** Generates `requests` over [A, B, third], calling `fault` just before step FAULT_STEP (and `during` while it runs). */
  const generate = async (
    third: string,
    fault?: { before?: () => Promise<void> | void; during?: () => void; after?: (engine: Engine, experts: RemoteRoutedExperts, step: () => Promise<void>, run: Run) => Promise<void> },
    dispatch: { deadline?: typeof DEADLINE; hedge?: HedgePolicy } = {},
  ): Promise<Run> => {
    const experts = await connectToShards([a.address, b.address, third], await readCheckpointIdentity(dir.path), { wireDtype: 'float32', combineDtype: 'float32', deadline: DEADLINE, ...dispatch });
    const engine = await loadEngineWith(dir.path, experts, { kvCacheTokens: 2048, maxBatchedTokens: 16 });
    const run = { tokens: [] as number[][], logits: [] as Float32Array[][], calls: [] as Run['calls'], health: [] as Run['health'], hedges: [] as Run['hedges'], failedSteps: 0 };
    let step = 0;
    const stepStarts: number[] = [];
    /** The step a call answered now was sent in (its round trip began at or after that step's start). */
    const sentIn = (call: DispatchCall): number => {
      const sentAt = performance.now() - call.roundTripMs;
      let s = step;
      while (s > 0 && stepStarts[s]! > sentAt) s--;
      return s;
    };
    experts.observe({ onCall: (call) => run.calls.push({ step: sentIn(call), call }), onHolderHealth: (h) => run.health.push({ ...h, step }), onHedge: (h) => run.hedges.push({ ...h, step }) });
    const sequences = requests.map((r) => engine.submit(r));
    const doStep = async (): Promise<void> => {
      stepStarts[step] = performance.now();
      await engine.step().catch((e: unknown) => {
        run.failedSteps++;
        throw e;
      });
      step++;
    };
    try {
      while (sequences.some((s) => !s.isFinished)) {
        if (step === FAULT_STEP && fault?.before) await fault.before();
        if (step === FAULT_STEP && fault?.during) {
          const p = doStep();
          fault.during();
          await p;
        } else await doStep();
      }
      run.tokens.push(...sequences.map((s) => [...s.outputTokenIds]));
      run.logits.push(...sequences.map((s) => s.logits));
      if (fault?.after) await fault.after(engine, experts, doStep, run);
    } finally {
      await engine.close();
    }
    return run;
  };

  /** The fault-free run's tokens exactly, and its logits within LOGIT_TOLERANCE; on a difference, names the first ones. */
  const expectSameOutputs = (run: Run): void => {
    expect(run.tokens).toEqual(baseline.tokens);
    const differences: string[] = [];
    expect(run.logits.map((s) => s.length)).toEqual(baseline.logits.map((s) => s.length));
    run.logits.forEach((seq, i) =>
      seq.forEach((l, s) => {
        const want = baseline.logits[i]![s]!;
        const at = l.findIndex((v, j) => !(Math.abs(v - want[j]!) <= LOGIT_TOLERANCE * Math.max(1, Math.abs(want[j]!))));
        if (at >= 0) differences.push(`sequence ${i} token ${s} logit ${at}: ${l[at]} vs ${want[at]}`);
      }),
    );
    expect(differences.slice(0, 5)).toEqual([]);
  };

  beforeAll(async () => {
    dir = await tempDir('failover');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 31 });
    [a, b] = await Promise.all([shard('0-7'), shard('8-15')]);
    const c = await shard('all');
    baseline = await generate(c.address);
    await c.kill();
  });
  afterAll(async () => {
    await Promise.all(started.map((s) => s.kill()));
    await dir?.remove();
  });

  it('the fault-free run used all three shards and never suspected one', () => {
    expect(new Set(baseline.calls.map((c) => c.call.shard)).size).toBe(3);
    expect(baseline.health).toEqual([]);
    expect(baseline.failedSteps).toBe(0);
  });

  it('kill -9 of a shard while a step runs: no step fails, its rows go to the replicas, the same tokens and logits', async () => {
    const c = await shard('all');
    const run = await generate(c.address, { during: () => c.signal('SIGKILL') });
    expect(run.failedSteps).toBe(0);
    // A reset connection, or (on a busy machine, while the kernel is still tearing the process down) the deadline.
    const suspicions = run.health.filter((h) => h.suspect);
    expect(suspicions.map((h) => h.shard)).toEqual([c.address]);
    expect(['failed', 'deadline']).toContain(suspicions[0]!.reason);
    // Found dead in the step of the kill or later, never before: no call failed before it (calls hedged
    // because they were late, which a busy machine makes happen at any step, are not resent).
    const foundAt = suspicions[0]!.step;
    expect(foundAt).toBeGreaterThanOrEqual(FAULT_STEP);
    expect(run.calls.filter((x) => x.call.resent && x.step < foundAt)).toEqual([]);
    // A and B took its rows in the step that found it dead, and nothing went to it after.
    expect(takenOverIn(run, c.address, foundAt)).toBe(true);
    expect(run.calls.filter((x) => x.step >= foundAt && x.call.shard === c.address)).toEqual([]);
    expectSameOutputs(run);
  });

  it('kill -9 of a shard between steps: the next call finds the connection reset, and the step still completes', async () => {
    const c = await shard('all');
    const run = await generate(c.address, { before: () => c.kill() });
    expect(run.failedSteps).toBe(0);
    expect(run.health.filter((h) => h.suspect).map((h) => [h.shard, h.reason, h.step])).toEqual([[c.address, 'failed', FAULT_STEP]]);
    expect(run.calls.filter((x) => x.call.resent && x.step < FAULT_STEP)).toEqual([]);
    expect(takenOverIn(run, c.address, FAULT_STEP)).toBe(true);
    expectSameOutputs(run);
  });

  /** No hedging: a late call waits for its deadline (the hedged stop has its own test below). */
  const UNHEDGED = { hedge: { p99Multiple: 0, minMs: 0 } };

  it('SIGSTOP of a shard: its call past the adaptive deadline goes to replicas in the same step; no work until its health check passes', async () => {
    const c = await shard('all');
    let callsBeforeResume = 0;
    let stepsBeforeResume = 0;
    const run = await generate(
      c.address,
      {
        before: () => c.signal('SIGSTOP'),
        after: async (engine, experts, step, sofar) => {
          const third = experts.connections()[2]!;
          // Still stopped: still suspect (its lease or registry record plays no part here).
          expect(experts.isSuspect(third)).toBe(true);
          c.signal('SIGCONT');
          const deadline = Date.now() + 30_000;
          while (experts.isSuspect(third) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          expect(experts.isSuspect(third)).toBe(false);
          // Healthy again: it gets work again.
          callsBeforeResume = sofar.calls.length;
          stepsBeforeResume = sofar.calls.at(-1)!.step;
          const more = engine.submit({ promptTokenIds: [5, 6, 7, 8, 9, 10, 11, 12], maxTokens: 6, sampling: GREEDY, ignoreEos: true });
          while (!more.isFinished) await step();
        },
      },
      UNHEDGED,
    );
    expect(run.failedSteps).toBe(0);
    const suspicions = run.health.filter((h) => h.suspect);
    expect(suspicions.map((h) => [h.shard, h.reason, h.step])).toEqual([[c.address, 'deadline', FAULT_STEP]]);
    expect(suspicions[0]!.error!.message).toMatch(/--dispatch-deadline-ms/);
    expect(run.health.filter((h) => !h.suspect).map((h) => h.shard)).toEqual([c.address]);
    expect(run.calls.slice(0, callsBeforeResume).filter((x) => x.step >= FAULT_STEP && x.call.shard === c.address)).toEqual([]);
    expect(run.calls.filter((x) => x.call.resent && x.step < FAULT_STEP)).toEqual([]);
    expect(run.calls.filter((x) => x.step === FAULT_STEP && x.call.resent).length).toBeGreaterThan(0);
    expect(run.calls.slice(callsBeforeResume).some((x) => x.step > stepsBeforeResume && x.call.shard === c.address)).toBe(true);
    expectSameOutputs(run);
  });

  /** A deadline far beyond the test: a stopped shard is never suspected, so only a hedge can keep a step from waiting for it. */
  const PATIENT = { deadline: { minMs: 120_000, maxMs: 120_000, p99Multiple: 4 } };

  it('SIGSTOP of a shard whose experts all have another holder: its late calls are hedged on them, no step waits for it, the same tokens and logits', async () => {
    const c = await shard('all');
    let resumed = false;
    // Bounded: the shard runs again after 60 s whatever happens (a step that waited for it ends then, and the test fails).
    let safety: NodeJS.Timeout | undefined;
    let stoppedThroughout = false;
    const run = await generate(
      c.address,
      {
        before: () => {
          c.signal('SIGSTOP');
          safety = setTimeout(() => ((resumed = true), c.signal('SIGCONT')), 60_000);
        },
        after: async () => {
          // Every step after the stop completed with the shard still stopped.
          stoppedThroughout = !resumed;
          clearTimeout(safety);
          c.signal('SIGCONT');
        },
      },
      PATIENT,
    );
    expect(stoppedThroughout).toBe(true);
    expect(run.failedSteps).toBe(0);
    expect(run.health).toEqual([]);
    // From the stop on, only its calls were hedged with success (before it, on a busy machine, any shard's late
    // call may be hedged, and the other holder's answer may come first).
    const won = run.hedges.filter((h) => h.outcome === 'won' && h.step >= FAULT_STEP);
    expect(won.length).toBeGreaterThan(0);
    expect(new Set(won.map((h) => h.shard))).toEqual(new Set([c.address]));
    // Nothing the stopped shard computed after the stop was used: it answered no call.
    expect(run.calls.filter((x) => x.step >= FAULT_STEP && x.call.shard === c.address)).toEqual([]);
    // The replicas' answers came in hedge calls; with no call failed, none was resent.
    expect(run.calls.some((x) => x.step >= FAULT_STEP && x.call.hedge && x.call.shard !== c.address)).toBe(true);
    expect(run.calls.filter((x) => x.call.resent)).toEqual([]);
    expectSameOutputs(run);
  });

  it('SIGSTOP of the only holder of some experts: no hedge, the step waits for it as before, the same tokens and logits', async () => {
    // Experts 8-15 live on B alone; A's 0-7 also on the third shard.
    const low = await shard('0-7');
    const run = await generate(
      low.address,
      {
        before: () => {
          b.signal('SIGSTOP');
          setTimeout(() => b.signal('SIGCONT'), 1500);
        },
      },
      PATIENT,
    );
    // B answered its call of the stalled step (it was waited for, not routed around).
    expect(run.calls.some((x) => x.step === FAULT_STEP && x.call.shard === b.address)).toBe(true);
    expect(run.hedges.filter((h) => h.shard === b.address)).toEqual([]);
    expect(run.health).toEqual([]);
    expect(run.failedSteps).toBe(0);
    expectSameOutputs(run);
  });

  it('a shard answering NaN for finite inputs is suspect at once and its rows are computed by the replicas', async () => {
    // A real gRPC shard server on loopback whose answers are poisoned after the experts ran.
    const real = await loadShardCompute(dir.path, parseExpertSpec('all'), { execution: { executionProvider: 'cpu', intraOpThreads: 1 }, weightDtype: 'auto' });
    class Poisoned extends ShardCompute {
      override async run(req: RunExpertsRequest__Output, receivedAt: number): ReturnType<ShardCompute['run']> {
        const result = await super.run(req, receivedAt);
        (result.response.output!.data as Buffer).writeUInt32LE(0x7fc00000, 0); // float32 NaN in the first value
        return result;
      }
    }
    const server = new ShardServer(new Poisoned(real.config, real.fingerprint, real.experts), 'poisoned');
    const address = await server.listen('127.0.0.1', 0);
    try {
      const run = await generate(address);
      expect(run.failedSteps).toBe(0);
      const suspicions = run.health.filter((h) => h.suspect);
      expect(suspicions.length).toBeGreaterThan(0);
      expect(new Set(suspicions.map((h) => `${h.shard} ${h.reason}`))).toEqual(new Set([`${address} non_finite`]));
      expect(suspicions[0]!.error!.name).toBe('NonFiniteResultError');
      expect(run.calls.filter((x) => x.call.resent).length).toBeGreaterThan(0);
      expectSameOutputs(run);
    } finally {
      await server.shutdown(1000);
    }
  });
});
