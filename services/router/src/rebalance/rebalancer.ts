import { measuredExpertBytes, timedSync, updatePlan, type ClusterRegistry, type PlacementPlan } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import type { ExpertLoadWindow } from './expert-load-window.js';
import type { RebalanceMetrics } from '@expertmesh/telemetry';
import { DeadSlots, type DeadSlotsDropped } from './dead-slots.js';
import { loadRows, warmUpInput, worstImbalance } from './load-replan.js';
import { ReplanThread } from './replan-thread.js';

export interface RebalanceOptions {
  /** How often the load is checked. */
  readonly intervalMs: number;
  /** Rebalance when some layer's max over mean tokens per shard passes this (e.g. 1.25). */
  readonly threshold: number;
  /** Tokens the window must hold before its load is trusted. */
  readonly minTokens: number;
  /** Longest wait for shards to switch to a new plan before the rebalancer checks again anyway. */
  readonly switchTimeoutMs?: number;
  /** How long a plan slot may stay without a live shard before a plan without it is stored (default 60 s). */
  readonly deadSlotGraceMs?: number;
}

export const DEFAULT_DEAD_SLOT_GRACE_MS = 60_000;

/**
 * Plans the planner thread makes, and throws away, when the loop starts. V8 optimises the planner's functions
 * once they are hot, on its own compiler threads at the process's priority (not the planner's nice 19): a plan of
 * the bench's shape has its largest compiles (16–106 ms of a compiler thread each) between its 13th and 30th run
 * in a fresh process (`--trace-opt`), and with 3 warm-up plans the router's first real plan set off a 77 ms compile
 * beside the step in flight (round 15's traced run). 40 keep them at the router's start.
 */
export const WARM_UP_PLANS = 40;

/** What one check found and did: for logs and tests. */
export interface RebalanceEvent {
  readonly version: number;
  readonly imbalanceBefore: number;
  readonly imbalanceAfter: number;
  readonly movedExperts: number;
  readonly movedBytes: number;
  /** Redundant copies per layer the plan gives, and those asked for (the plan in force had): fewer when they did not fit the memory budget. */
  readonly redundantExperts: number;
  readonly redundantAsked: number;
  /** Null when the shards had not all switched within the switch timeout. */
  readonly switchMs: number | null;
}

/**
 * The closed loop: every interval, the load of the window is weighed against the plan in force.
 * When the worst layer's imbalance passes the threshold, and a re-plan would lower it, the new plan
 * (fewest experts moved) is stored over the one read, and the time until every shard reports it is
 * measured. Shards load new experts while the old serve, and hand old ones over only once another
 * holder has them, so serving never pauses.
 */
export class Rebalancer {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Aborted by stop(): a wait for shards to switch ends then. */
  private readonly stopping = new AbortController();
  private readonly deadSlots: DeadSlots;
  /** The re-plan's worker thread (started with the loop, stopped with it), at the lowest priority. */
  readonly planner = new ReplanThread();

  constructor(
    private readonly registry: ClusterRegistry,
    private readonly model: { readonly config: ModelConfig; readonly fingerprint: string },
    private readonly window: ExpertLoadWindow,
    private readonly metrics: RebalanceMetrics,
    private readonly options: RebalanceOptions,
    private readonly onEvent: (e: RebalanceEvent) => void = () => undefined,
    private readonly onDeadSlots: (e: DeadSlotsDropped) => void = () => undefined,
  ) {
    this.deadSlots = new DeadSlots(registry, model.config, options.deadSlotGraceMs ?? DEFAULT_DEAD_SLOT_GRACE_MS);
  }

  start(): void {
    // Warm: the first re-plan then waits neither for the thread nor for its modules to load, and runs compiled
    // code (plans of the model's shape, thrown away; a look meanwhile finds the planner busy and skips).
    const config = { moeLayers: [...this.model.config.moeLayers], nRoutedExperts: this.model.config.nRoutedExperts };
    const warm = warmUpInput(config, this.model.fingerprint);
    void (async () => {
      for (let i = 0; i < WARM_UP_PLANS && !this.stopped; i++) await this.planner.plan(warm);
    })().catch((e: Error) => void (this.stopped || process.stderr.write(`[rebalance] the planner's warm-up failed: ${e.message}\n`)));
    this.timer = setInterval(() => {
      if (this.running || this.stopped) return;
      this.running = this.tick().finally(() => (this.running = null));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    if (this.timer) clearInterval(this.timer);
    await this.running;
    await this.planner.close();
  }

  /**
   * One interval's work: dead slots first, then the load. Each failure is logged on its own, so a dead
   * slot that cannot be dropped (the shards left cannot hold its experts) never stops load rebalancing.
   */
  async tick(log: (line: string) => void = (line) => void process.stderr.write(line)): Promise<void> {
    for (const step of [() => this.checkDeadSlots(), () => this.check(log)]) {
      try {
        await step();
      } catch (e) {
        log(`[rebalance] ${(e as Error).message.slice(0, 500)}\n`);
      }
    }
  }

  /** Drops plan slots that have had no live shard for longer than the grace (a shard killed for good), restoring every expert's holders. */
  async checkDeadSlots(): Promise<DeadSlotsDropped | null> {
    const dropped = await this.deadSlots.check();
    if (!dropped) return null;
    this.metrics.deadSlotsDropped.inc(dropped.slots.length);
    this.metrics.bytesMoved.inc(dropped.movedBytes);
    this.metrics.expertsMoved.inc(dropped.movedExperts);
    this.onDeadSlots(dropped);
    return dropped;
  }

  /**
   * One look at the load; stores a new plan when it pays. The decision (imbalance, re-plan, the plan's
   * basis) is made in the planner's worker thread, off the thread that serves requests; reading the
   * load and the etcd transaction stay here. A look that finds a plan still being made skips.
   * The plan stays within the memory budget stored with the plan in force: with fewer redundant copies
   * when the current ones do not fit (logged, counted), and none stored when not even one copy of each
   * expert fits (logged with what to change, counted as skipped; the plan in force stays).
   */
  async check(log: (line: string) => void = (line) => void process.stderr.write(line)): Promise<RebalanceEvent | null> {
    if (this.window.total() < this.options.minTokens || this.planner.busy) return null;
    timedSync('rebalance-check', () => undefined);
    const config = { moeLayers: [...this.model.config.moeLayers], nRoutedExperts: this.model.config.nRoutedExperts };
    const load = loadRows(config, this.window.snapshot());
    const shards = await this.registry.listShards();
    let before: ReadonlyArray<readonly [number, number]> = [];
    const change = await updatePlan(this.registry, async (current) => {
      if (!current || this.stopped) return null;
      // Bytes per expert as shards really hold them (their records), else as the plan was made with.
      const bytesPerExpert = measuredExpertBytes(shards) || current.basis?.expertBytes || 0;
      const decided = await timedSync('replan-post', () => this.planner.plan({ config, fingerprint: this.model.fingerprint, current, load, bytesPerExpert, threshold: this.options.threshold })).catch((e: Error) => {
        // Not even one copy of each expert fits the budget: nothing to store, and nothing a later look can change
        // until shards or memory are added; said every time, as the load stays skewed.
        if (e.name !== 'PlacementPlanError') throw e;
        this.metrics.skipped.inc({ reason: 'over_budget' });
        log(`[rebalance] no plan stored (plan v${current.version} stays in force): ${e.message.slice(0, 500)}\n`);
        return null;
      });
      if (!decided) return null;
      timedSync(decided.change ? 'replan-answered-change' : 'replan-answered-none', () => undefined);
      before = decided.before;
      for (const [layer, v] of before) this.metrics.imbalance.set({ layer: String(layer), phase: 'current' }, v);
      return this.stopped ? null : decided.change;
    });
    if (!change) return null;
    timedSync('plan-stored', () => undefined);
    if (change.redundantExperts < change.redundantAsked) {
      this.metrics.redundantDropped.inc(change.redundantAsked - change.redundantExperts);
      // The budget the plan in force was stored with, which the new plan's basis keeps.
      const budget = change.plan.basis?.shardMemoryBytes;
      log(`[rebalance] plan v${change.plan.version}: ${change.redundantAsked} redundant experts per layer do not fit the memory budget${budget !== undefined ? ` (${(budget / 2 ** 20).toFixed(1)} MiB per shard)` : ''}: it gives ${change.redundantExperts || 'none'} (the hottest experts first)\n`);
    }
    const storedAt = performance.now();
    this.metrics.rebalances.inc();
    this.metrics.bytesMoved.inc(change.movedBytes);
    this.metrics.expertsMoved.inc(change.movedExperts);
    for (const [layer, v] of before) this.metrics.imbalance.set({ layer: String(layer), phase: 'before' }, v);
    for (const [layer, v] of change.after) this.metrics.imbalance.set({ layer: String(layer), phase: 'after' }, v);
    const switched = await this.untilSwitched(change.plan);
    const switchMs = switched ? performance.now() - storedAt : null;
    if (switchMs !== null) this.metrics.switchSeconds.observe(switchMs / 1000);
    const event: RebalanceEvent = { version: change.plan.version, imbalanceBefore: worstImbalance(before), imbalanceAfter: worstImbalance(change.after), movedExperts: change.movedExperts, movedBytes: change.movedBytes, redundantExperts: change.redundantExperts, redundantAsked: change.redundantAsked, switchMs };
    this.onEvent(event);
    return event;
  }

  /**
   * Waits until every slot of `plan` has a live shard that reports it (bounded), on a records watch held for
   * the wait: each record change arrives as its event. Reading every record every 100 ms instead put an etcd
   * range read on the shards' core and a parse of every record on this serving thread ten times a second,
   * for as long as the switch lasts, beside the switch's own record writes.
   */
  private async untilSwitched(plan: PlacementPlan): Promise<boolean> {
    if (this.stopped) return false;
    let settle!: (switched: boolean) => void;
    const done = new Promise<boolean>((resolve) => (settle = resolve));
    const timer = setTimeout(() => settle(false), this.options.switchTimeoutMs ?? 600_000);
    const onStop = (): void => settle(false);
    this.stopping.signal.addEventListener('abort', onStop, { once: true });
    let stopWatch: (() => Promise<void>) | null = null;
    try {
      stopWatch = await this.registry.watchShards((records) => {
        const bySlot = new Map(records.map((s) => [s.slot, s]));
        if (Object.keys(plan.shards).every((slot) => (bySlot.get(slot)?.planVersion ?? 0) >= plan.version)) settle(true);
      });
      return await done;
    } finally {
      clearTimeout(timer);
      this.stopping.signal.removeEventListener('abort', onStop);
      await stopWatch?.();
    }
  }
}
