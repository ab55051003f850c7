import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { planImbalance, planPlacement, replan, type PlacementPlan } from '@expertmesh/discovery';
import { decideLoadReplan, loadRows, type LoadReplanInput } from '../src/rebalance/load-replan.js';
import { kernelThreadId, threadNice } from '@expertmesh/process-lifecycle';
import { REPLAN_NICE, ReplanBusyError, ReplanThread } from '../src/rebalance/replan-thread.js';

// The bench preset's placement: 64 experts × 5 MoE layers.
const config = { moeLayers: [1, 2, 3, 4, 5], nRoutedExperts: 64 };
const BYTES = 3 * 1024 * 512 * 4;

function skewedLoad(seed: number): Map<number, number[]> {
  let s = seed;
  const rnd = (): number => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  return new Map(config.moeLayers.map((l) => [l, Array.from({ length: 64 }, (_, e) => Math.floor(rnd() * ((e + seed) % 9 === 0 ? 5000 : 400)))]));
}

function inputFor(slots: number, seed: number, current?: PlacementPlan): LoadReplanInput {
  const plan = current ?? planPlacement({ config: config as never, modelFingerprint: 'fp', version: 3, slots: Array.from({ length: slots }, (_, i) => `shard-${i}`), redundantExperts: 13, bytesPerExpert: BYTES });
  return { config, fingerprint: 'fp', current: plan, load: loadRows(config, skewedLoad(seed)), bytesPerExpert: BYTES, threshold: 1.1 };
}

describe('the re-plan worker thread', () => {
  it('plans exactly what the planner plans in the serving thread, and what the loop planned before it moved (bench placement, 4 and 5 shards)', async () => {
    const thread = new ReplanThread();
    try {
      let changed = 0;
      for (const [slots, seed] of [[4, 1], [4, 7], [5, 3], [5, 11], [4, 0]] as const) {
        const input = inputFor(slots, seed);
        const inThread = decideLoadReplan(input);
        const fromWorker = await thread.plan(input);
        expect(fromWorker).toEqual(inThread);
        // The loop's decision as it was made in the serving thread before (rebalancer.ts at 30feeed).
        const snapshot = skewedLoad(seed);
        const load = (l: number, e: number): number => snapshot.get(l)?.[e] ?? 0;
        expect(fromWorker.before).toEqual([...planImbalance(input.current, config, load)]);
        const next = replan({ config, modelFingerprint: 'fp', version: 4, current: input.current, slots: Object.keys(input.current.shards), expertLoad: load, bytesPerExpert: BYTES });
        if (fromWorker.change) {
          changed++;
          expect(fromWorker.change.plan.shards).toEqual(next.plan.shards);
          expect(fromWorker.change.plan.version).toBe(4);
          expect(fromWorker.change.movedExperts).toBe(next.movedExperts);
          expect(fromWorker.change.plan.basis?.expertLoad?.['3']).toEqual(snapshot.get(3));
        }
      }
      expect(changed).toBeGreaterThan(0);
      // An even load needs no change.
      const even = { ...inputFor(4, 1), load: new Float64Array(5 * 64).fill(100) };
      expect(await thread.plan(even)).toEqual({ before: expect.any(Array), change: null });
    } finally {
      await thread.close();
    }
  });

  it("surfaces the planner's errors with their name and message, and plans again after one", async () => {
    const thread = new ReplanThread();
    try {
      const input = inputFor(4, 7);
      const tooSmall = { ...input, current: { ...input.current, basis: { shardMemoryBytes: BYTES * 10 } } };
      expect(() => decideLoadReplan(tooSmall)).toThrow(/budget/);
      await expect(thread.plan(tooSmall)).rejects.toMatchObject({ name: 'PlacementPlanError', message: expect.stringMatching(/but the budget is .* per shard/) });
      expect(await thread.plan(input)).toEqual(decideLoadReplan(input));
    } finally {
      await thread.close();
    }
  });

  it('plans one at a time: a second plan while one runs is refused, not queued', async () => {
    const thread = new ReplanThread();
    try {
      const first = thread.plan(inputFor(5, 3));
      expect(thread.busy).toBe(true);
      await expect(thread.plan(inputFor(4, 1))).rejects.toBeInstanceOf(ReplanBusyError);
      expect((await first).before).toHaveLength(5);
      expect(thread.busy).toBe(false);
    } finally {
      await thread.close();
    }
  });

  it('stops its worker on close (a plan still running is rejected), and never keeps a process alive', async () => {
    const thread = new ReplanThread();
    const worker = await thread.start();
    const exited = new Promise<number>((r) => worker.once('exit', r));
    const running = thread.plan(inputFor(4, 7));
    await thread.close();
    await exited;
    await expect(running).rejects.toThrow(/re-plan thread stopped/);
    await expect(thread.plan(inputFor(4, 7))).rejects.toThrow(/closed/);
    // A process that planned and never closed the thread still exits by itself.
    const script = fileURLToPath(new URL('./fixtures/replan-and-return.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(0);
    expect(out).toMatch(/^planned \d+ layers\n$/);
  }, 60_000);

  it('plans at the lowest priority, on its own thread only: the threads that serve keep theirs (read back from /proc)', async () => {
    const thread = new ReplanThread();
    const serving = kernelThreadId()!;
    const servingNice = threadNice(serving);
    try {
      await thread.start();
      const planner = thread.thread!;
      expect(planner.tid).not.toBe(serving);
      expect(planner.nice).toBe(REPLAN_NICE);
      // The kernel's own record of each thread (/proc/PID/task/TID/stat, field 19), not the thread's word for it.
      expect(threadNice(planner.tid)).toBe(REPLAN_NICE);
      expect(servingNice).toBeLessThan(REPLAN_NICE);
      expect(threadNice(serving)).toBe(servingNice);
      // A plan made at that priority is the same plan.
      const input = inputFor(4, 7);
      expect(await thread.plan(input)).toEqual(decideLoadReplan(input));
      expect(threadNice(planner.tid)).toBe(REPLAN_NICE);
    } finally {
      await thread.close();
    }
  });
});
