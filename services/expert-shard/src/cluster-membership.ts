import {
  planProblem,
  RegistryConflictError,
  replanMembers,
  replanWithout,
  SlotTakenError,
  keptElsewhere,
  servingPeerOf,
  switchingBefore,
  timedSync,
  updatePlan,
  type ClusterRegistry,
  type PlacementPlan,
  type ShardRecord,
  type ShardRegistration,
  type StaleHolderCheck,
} from '@expertmesh/discovery';
import { selectionFromPlan } from './expert-spec.js';
import { loadExperts, type ShardLoadOptions } from './load-shard.js';
import { loadingBefore } from './load-turn.js';
import type { ShardCompute } from './shard-compute.js';

export class PlanWaitError extends Error {
  override readonly name = 'PlanWaitError';
}

type Layers = { layer: number; experts: number[] }[];

/** The live shard records one watch keeps current, and the waits judging each change. */
interface ShardRecordsView {
  records: ShardRecord[] | null;
  readonly waiters: Set<(records: ShardRecord[]) => void>;
}

/** How a shard following the plan loads a slot's experts. */
export interface ShardReload {
  readonly modelDir: string;
  readonly load: ShardLoadOptions;
  /**
   * Answers synthetic calls through the shard's call path (ShardServer.warmUp): run once a shard that has
   * answered no call yet (joining) has loaded its experts, before it announces them.
   */
  readonly warmCallPath?: () => Promise<void>;
  /**
   * Run by a shard that has answered no call yet just before its first record that names experts (the one
   * that lets routers route to it): main.ts puts back the autogroup it lowered for its start-up and load.
   */
  readonly beforeAnnounce?: () => Promise<void>;
}

export interface MembershipTimings {
  /** How long requests routed before routers saw a switch may still use the experts handed over. */
  readonly retireGraceMs: number;
  /** How long a switch or a departure waits for other shards to hold the experts it gives up. */
  readonly handoffTimeoutMs: number;
  /** Whether leaving hands the slot's experts over first (off for a cluster stopped as a whole). */
  readonly handOverOnLeave?: boolean;
  /**
   * While it serves, a shard loading a new plan's experts rests this many times as long as each graph
   * took to build (restAfterBuild): the load takes at most 1 / (1 + factor) of a core from serving.
   */
  readonly loadRestFactor?: number;
  /**
   * The same for a shard that has answered no call yet (joining): it has no step ends to build in
   * (StepEnds finds it idle), so without a longer rest it builds its whole set at a quarter of a core,
   * at moments unrelated to the router's steps, on a core it may share with the shards that serve.
   * Nothing waits on it but its own start. Unset: loadRestFactor.
   */
  readonly joinLoadRestFactor?: number;
}

/** Loading a new plan takes at most a quarter of one core: a 16-expert graph of the demo model builds in ~16 ms. */
export const DEFAULT_LOAD_REST_FACTOR = 3;

/** A joining shard's load takes at most 1/13 of a core: its join becomes ~3× as long as with DEFAULT_LOAD_REST_FACTOR. */
export const DEFAULT_JOIN_LOAD_REST_FACTOR = 12;

export const DEFAULT_TIMINGS: MembershipTimings = { retireGraceMs: 5_000, handoffTimeoutMs: 120_000, loadRestFactor: DEFAULT_LOAD_REST_FACTOR, joinLoadRestFactor: DEFAULT_JOIN_LOAD_REST_FACTOR };

/** How long a leaving shard waits for others stopped at the same moment to say they are leaving too. */
const LEAVE_SETTLE_MS = 500;

/** How long one registry call of a departure may take before the hand-over is given up. */
const REGISTRY_CALL_BOUND_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `promise`, or an error naming `what` after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * A shard's life in the cluster: its record under a lease, kept current to what it really runs.
 *
 * A shard following the plan claims a slot atomically (the slot key and its record in one etcd
 * transaction under its lease), then loads that slot's experts; with every slot taken it claims a
 * new one and adds it to the plan (a re-plan that gives it work). A new plan is applied without a
 * moment in which an expert has no holder: the shard loads its new experts while the old serve,
 * advertises both, and gives up the old ones only once another live shard advertises each of them
 * (then keeps them a grace period for requests already routed). Leaving (SIGTERM) runs the same
 * hand-over: a plan without this slot, and the lease is let go only once others hold its experts.
 */
export class ClusterMembership {
  private registration: ShardRegistration | null = null;
  private stopPlanWatch: (() => Promise<void>) | null = null;
  private record: ShardRecord;
  private reloading: Promise<void> = Promise.resolve();
  private leaving = false;
  /** Aborted when this shard starts leaving: a wait for its turn to load ends then. */
  private readonly leavingSignal = new AbortController();
  private readonly planSeen: ((plan: PlacementPlan) => void)[] = [];
  private recordsView: Promise<ShardRecordsView> | null = null;
  /** The records watch's cancel, once it exists. */
  private recordsWatch: Promise<() => Promise<void>> | null = null;
  /**
   * When this shard takes in a plan or record change: at the end of the router's step (StepEnds). A
   * change reaches every shard of a host at one instant; parsing and judging it at once would put all
   * their CPU on the expert calls in flight (docs/benchmarks.md, issue 16, round 14).
   */
  private readonly atStepEnd = (): Promise<unknown> => this.compute.stepEnds.next();

  constructor(
    private readonly registry: ClusterRegistry,
    private readonly compute: ShardCompute,
    base: { shardId: string; address: string; framesAddress?: string },
    private readonly reload: ShardReload | null,
    private readonly onPlanRejected: (problem: string) => void = (problem) => void process.stderr.write(`expertmesh shard: ignoring the stored plan: ${problem}\n`),
    private readonly timings: MembershipTimings = DEFAULT_TIMINGS,
    private readonly log: (line: string) => void = (line) => void process.stderr.write(`expertmesh shard: ${line}\n`),
  ) {
    this.record = {
      shardId: base.shardId,
      address: base.address,
      ...(base.framesAddress ? { framesAddress: base.framesAddress } : {}),
      slot: '',
      planVersion: 0,
      modelFingerprint: compute.fingerprint,
      layers: compute.servingLayers(),
      computeDtype: 'float32',
      weightBytes: compute.experts.weightBytes,
      weightFormat: compute.experts.weightFormat,
      health: 'SERVING',
    };
  }

  get slot(): string {
    return this.record.slot;
  }

  get planVersion(): number {
    return this.record.planVersion;
  }

  /**
   * Registers with the experts given by hand (no slot). The id of a previous process that is gone
   * (`isStale` says so) is taken over at once; a live holder's is retried for one TTL (it may be
   * stopping) and then reported.
   */
  async join(ttlSeconds: number, keepAliveSeconds?: number, isStale?: StaleHolderCheck): Promise<void> {
    await this.register(this.record, ttlSeconds, keepAliveSeconds, isStale);
  }

  /**
   * Takes a slot of the plan (`wanted`, or the first free one; a new slot when all are taken, or
   * when `wanted` is not in the plan), then follows the plan: resolves once this shard serves its
   * slot's experts.
   */
  async joinPlan(ttlSeconds: number, keepAliveSeconds: number | undefined, isStale: StaleHolderCheck | undefined, wanted: string | undefined, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const plan = await this.validPlan(deadline);
    for (;;) {
      const others = (await this.registry.listShards()).filter((r) => r.shardId !== this.record.shardId);
      const taken = new Set(others.map((r) => r.slot));
      const current = (await this.registry.getPlan()) ?? plan;
      const free = Object.keys(current.shards).filter((s) => !taken.has(s));
      // A slot whose holder is dead (its lease not yet run out) is waited for: this shard replaces it rather than growing the plan.
      const deadHolder = free.length === 0 && isStale !== undefined && (await anyAsync(others.filter((r) => r.slot in current.shards), isStale));
      const candidates = wanted !== undefined ? [wanted] : deadHolder ? [] : [...free, newSlotName(current, taken)];
      for (const slot of candidates) {
        try {
          await this.register({ ...this.record, slot, health: 'NOT_SERVING', layers: [], weightBytes: 0 }, ttlSeconds, keepAliveSeconds, isStale);
          this.record = { ...this.record, slot, health: 'NOT_SERVING', layers: [], weightBytes: 0 };
          return await this.follow(deadline);
        } catch (e) {
          if (!(e instanceof SlotTakenError)) throw e;
        }
      }
      if (Date.now() > deadline) throw new PlanWaitError(wanted !== undefined ? `slot ${wanted} stays held by another live shard: stop it, or start this one without --slot` : 'no slot could be claimed: every one was taken meanwhile');
      await sleep(250);
    }
  }

  /**
   * The first step of leaving (SIGTERM): hands this slot's experts to the other shards through a plan
   * change, and stops advertising once they hold them. Bounded by the hand-over timeout; never throws.
   * The shard still answers calls until its NOT_SERVING record: its own work here (the draining mark,
   * reading the records and the plan, the re-plan, the plan's write, NOT_SERVING) is done in the quiet
   * part of a step (StepEnds), as a switch's is, not on the calls of the step in flight.
   */
  async handOver(): Promise<void> {
    this.leaving = true;
    this.leavingSignal.abort();
    if (!this.record.slot || !this.reload || !this.registration || this.timings.handOverOnLeave === false) return;
    try {
      // A registry that does not answer cannot take a hand-over: leave as before, at once.
      await within(REGISTRY_CALL_BOUND_MS, this.publishAtStepEnd({ draining: true }), 'marking this shard draining');
      // A leaving shard takes no plan in (see follow): the plan it stores next, parsed by its own watch, would be
      // CPU for nothing on a core the serving shards share (its watch is stopped in leave() at the latest).
      await within(REGISTRY_CALL_BOUND_MS, this.stopWatchingPlan(), 'stopping the plan watch').catch(() => undefined);
      await this.reloading;
      // Shards stopped together (a whole cluster shutting down) see each other draining: none re-plans.
      await sleep(LEAVE_SETTLE_MS);
      await this.atStepEnd();
      // One read of the records serves both the check and the re-plan (each read is parsed on the serving core).
      const records = await this.registry.listShards();
      if (this.takersAmong(records).length === 0) this.log('leaving: no other serving shard to hand experts to; the plan stays as it is');
      else await this.handOffSlot(records);
    } catch (e) {
      this.log(`leaving without a complete hand-over: ${(e as Error).message}`);
    }
  }

  /** Leaves the registry (after handOver): the lease goes, and with it the record and the slot claim. */
  async leave(): Promise<void> {
    this.leaving = true;
    this.leavingSignal.abort();
    await this.stopWatchingPlan();
    // A watch still being created (etcd unreachable) does not hold the departure: it is cancelled once it exists.
    const recordsWatch = this.recordsWatch;
    this.recordsWatch = null;
    if (recordsWatch) await within(REGISTRY_CALL_BOUND_MS, recordsWatch.then((stop) => stop()), 'cancelling the shard records watch').catch(() => undefined);
    await this.registration?.close();
  }

  /** Cancels the plan watch once (handOver, then leave). */
  private async stopWatchingPlan(): Promise<void> {
    const stop = this.stopPlanWatch;
    this.stopPlanWatch = null;
    await stop?.();
  }

  private takersAmong(records: readonly ShardRecord[]): ShardRecord[] {
    return records.filter((r) => servingPeerOf(this.record, r));
  }

  private async register(record: ShardRecord, ttlSeconds: number, keepAliveSeconds?: number, isStale?: StaleHolderCheck): Promise<void> {
    const deadline = Date.now() + (ttlSeconds + 1) * 1000;
    for (;;) {
      try {
        this.registration = await this.registry.registerShard(record, ttlSeconds, keepAliveSeconds, isStale);
        return;
      } catch (e) {
        if (!(e instanceof RegistryConflictError) || e instanceof SlotTakenError || Date.now() > deadline) throw e;
        await sleep(250);
      }
    }
  }

  /** Watches the plan; adds this slot to it when it is new; resolves once the slot's experts serve. */
  private async follow(deadline: number): Promise<void> {
    // The records watch every wait of a plan switch answers from, started now rather than at the first switch.
    this.shardRecords().catch(() => undefined);
    const served = new Promise<void>((resolve) => this.planSeen.push(() => this.record.health === 'SERVING' && resolve()));
    this.stopPlanWatch = await this.registry.watchPlan(
      (plan) => {
        if (!plan || this.leaving) return;
        const problem = timedSync('plan-check', () => planProblem(plan, this.compute.config, this.compute.fingerprint));
        if (problem) return this.onPlanRejected(problem);
        this.reloading = this.reloading
          .then(() => this.applyPlan(plan))
          .catch((e: Error) => this.log(`plan ${plan.version}: ${e.message}`))
          .finally(() => this.planSeen.forEach((f) => f(plan)));
      },
      { pace: this.atStepEnd },
    );
    const slot = this.record.slot;
    const records = await this.registry.listShards();
    const added = await updatePlan(this.registry, (current) => (!current || current.shards[slot] ? null : replanMembers(this.compute.config, current, [...Object.keys(current.shards), slot], records)));
    if (added) this.log(`joined as new slot ${slot}: stored plan v${added.plan.version} (${added.movedExperts} experts moved, ${added.movedBytes} bytes)`);
    const left = deadline - Date.now();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([served, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new PlanWaitError(`slot ${slot}: its experts were not loaded within the time allowed`)), Math.max(0, left))))]).finally(() => clearTimeout(timer));
  }

  /** A valid plan for this model, waiting for one (a cluster being set up) until `deadline`. */
  private async validPlan(deadline: number): Promise<PlacementPlan> {
    let rejected: string | null = null;
    for (;;) {
      const read = await this.registry.getPlan().then(
        (p) => p,
        (e: Error) => e,
      );
      const problem = read instanceof Error ? read.message : read ? planProblem(read, this.compute.config, this.compute.fingerprint) : null;
      if (problem && problem !== rejected) this.onPlanRejected((rejected = problem));
      if (read && !(read instanceof Error) && !problem) return read;
      if (Date.now() > deadline) {
        throw new PlanWaitError(rejected ? `the stored plan cannot be followed (${rejected}): store a valid one with \`expertmesh plan --store\`` : 'no placement plan in the registry: run `expertmesh plan --store` or `expertmesh up`');
      }
      await sleep(500);
    }
  }

  /**
   * Loads this slot's experts of `plan` beside the ones serving, advertises both, waits until other
   * shards advertise the ones it gives up, then advertises only the new set.
   */
  private async applyPlan(plan: PlacementPlan): Promise<void> {
    const target = plan.shards[this.record.slot];
    if (!target || !this.reload || this.leaving) return;
    const now = timedSync('plan-compare', () => sameLayers(this.compute.experts.heldLayers(), target));
    const joining = !this.compute.stepEnds.answeredAny;
    // A joining shard readies itself (beforeAnnounce: a full collection, its autogroup back) once, before its first record that names experts.
    let readied = false;
    const readyToAnnounce = async (): Promise<void> => {
      if (!joining || readied) return;
      readied = true;
      await this.reload?.beforeAnnounce?.();
    };
    if (!now) {
      await this.untilTurnToLoad(plan);
      const started = performance.now();
      const rest = this.timings.loadRestFactor ?? DEFAULT_LOAD_REST_FACTOR;
      const next = await loadExperts(this.reload.modelDir, this.compute, selectionFromPlan(target), this.reload.load, rest, this.timings.joinLoadRestFactor ?? rest);
      timedSync('switch-begin', () => this.compute.beginSwitch(next));
      // Nobody waits on a shard that has answered no call: its first calls' cold code runs now, not on the router's first step with it.
      if (joining && this.reload.warmCallPath) await this.reload.warmCallPath();
      const givenUp = timedSync('plan-given-up', () => minus(this.compute.servingLayers(), target));
      this.log(`plan ${plan.version}: loaded in ${Math.round(performance.now() - started)} ms; ${count(givenUp) > 0 ? `serving old and new, handing over ${count(givenUp)} experts` : 'nothing to hand over'}`);
      // Nothing given up: what this shard serves now is the plan's, and one record says so (every record
      // write wakes every watcher: the router, every shard, etcd's own work, all on the cores that serve).
      // The same when what it gives up other shards advertise already (they loaded it, or held it before):
      // its experts are never held by no one either way, and the record of old and new is one more write.
      if (count(givenUp) > 0 && !(await this.keptElsewhereNow(givenUp, plan))) {
        await readyToAnnounce();
        // A record of old and new that says what the last one said (this shard gained nothing: its old
        // set serves as it was) is not written: only the switch's record is news.
        const serving = this.compute.servingLayers();
        if (this.record.health !== 'SERVING' || !sameLayers(this.record.layers, serving)) await this.publishAtStepEnd({ layers: serving, health: 'SERVING' });
        if (!(await this.untilHeldElsewhere(givenUp, plan))) {
          this.log(`plan ${plan.version}: other shards did not take over ${count(givenUp)} experts in time; this shard keeps serving them`);
          await this.publishAtStepEnd({ planVersion: plan.version });
          return;
        }
      }
    }
    await readyToAnnounce();
    if (!joining) await this.switchTurn(plan);
    await this.publishAtStepEnd({ layers: target.map((l) => ({ layer: l.layer, experts: [...l.experts] })), planVersion: plan.version, health: 'SERVING' });
    if (!now) this.log(`plan ${plan.version}: switched`);
    timedSync('switch-retire', () => this.compute.retire(this.timings.retireGraceMs));
  }

  /**
   * Waits until no shard on this host with an earlier slot is still loading its experts of `plan`
   * (see loadingBefore), bounded by the hand-over timeout: a shard that never finishes is not waited
   * for longer than a hand-over would be. Leaving ends the wait.
   */
  private async untilTurnToLoad(plan: PlacementPlan): Promise<void> {
    if (this.leaving) return;
    let waited = false;
    await this.whenShards(
      'load-turn-judge',
      (records) => {
        const before = loadingBefore(this.record, plan, records);
        if (before.length === 0) return true;
        if (!waited) this.log(`plan ${plan.version}: waiting for ${before.map((r) => r.slot).join(', ')} on this host to load first`);
        waited = true;
        return undefined;
      },
      false,
      this.leavingSignal.signal,
    ).catch(() => false); // A registry that cannot be watched holds no turn back: load now.
  }

  /**
   * Waits, before this shard writes its switch record for `plan`, one step end for each shard on its host
   * with an earlier slot that has not written its own yet (see switchTurn in plan-progress): shards that
   * become ready at one record change (a joining shard's announce lets all its givers switch) write one
   * record per step end, in slot order, instead of all at one. Each write and its handling by every
   * watcher (etcd's, the other shards', the router's) then falls in the quiet part of a different step,
   * on the core the shards share, not all on one.
   */
  private async switchTurn(plan: PlacementPlan): Promise<void> {
    const view = await this.shardRecords().catch(() => null);
    if (!view?.records) return;
    const before = timedSync('switch-turn', () => switchingBefore(this.record, plan, view.records!).length);
    if (before > 0) await this.compute.stepEnds.later(before);
  }

  /** Stores a plan without this slot (re-planned on `records`, the live shard records), then waits until other shards advertise every expert this one serves. */
  private async handOffSlot(records: readonly ShardRecord[]): Promise<void> {
    const slot = this.record.slot;
    const draining = new Set(records.filter((r) => r.draining).map((r) => r.slot));
    const change = await updatePlan(this.registry, async (current) => {
      if (!current?.shards[slot]) return null;
      const gone = Object.keys(current.shards).filter((s) => s === slot || draining.has(s));
      if (gone.length === Object.keys(current.shards).length) return null;
      // The re-plan and the plan's write (which wakes every watcher) right after a step's last answer.
      await this.atStepEnd();
      return replanWithout(this.compute.config, current, gone, records);
    });
    if (change) this.log(`leaving: stored plan v${change.plan.version} without slot ${slot} (${change.movedExperts} experts moved, ${change.movedBytes} bytes)`);
    const serving = this.compute.servingLayers();
    if (!(await this.untilHeldElsewhere(serving))) throw new Error(`other shards did not take over ${count(serving)} experts within ${this.timings.handoffTimeoutMs} ms`);
    // Routers stop routing here once they see the record go; requests already routed still finish.
    await this.publishAtStepEnd({ health: 'NOT_SERVING' });
    this.log(`leaving: other shards hold its ${count(serving)} experts; not serving, letting go of the lease in ${this.timings.retireGraceMs} ms`);
    await sleep(this.timings.retireGraceMs);
  }

  /**
   * Whether, within the hand-over timeout, every expert of `layers` is advertised by another live, serving
   * shard of this model; with `plan`, by one whose slot keeps it in that plan (see keptElsewhere).
   */
  private async untilHeldElsewhere(layers: Layers, plan?: PlacementPlan): Promise<boolean> {
    if (count(layers) === 0) return true;
    return this.whenShards('held-elsewhere-judge', (records) => {
      const others = this.takersAmong(records);
      if (others.length === 0) return false;
      const held = plan ? keptElsewhere(this.record, plan, records, layers) : this.heldBy(others, layers);
      return held ? true : undefined;
    }, false);
  }

  /** Whether the records the watch holds now show every expert of `layers` advertised by a shard that keeps it in `plan` (no wait, no read). */
  private async keptElsewhereNow(layers: Layers, plan: PlacementPlan): Promise<boolean> {
    const view = await this.shardRecords().catch(() => null);
    return view?.records ? timedSync('held-elsewhere-now', () => keptElsewhere(this.record, plan, view.records!, layers)) : false;
  }

  private heldBy(others: readonly ShardRecord[], layers: Layers): boolean {
    const held = new Set(others.flatMap((r) => r.layers.flatMap((l) => l.experts.map((e) => `${l.layer}/${e}`))));
    return layers.every((l) => l.experts.every((e) => held.has(`${l.layer}/${e}`)));
  }

  /**
   * The first answer `decide` gives (not undefined) on the live shard records, judged now and after
   * every change to them. The records come from one etcd watch kept for the membership's life
   * (shardRecords): a wait creates no watch and reads nothing, and while nothing changes nothing is
   * read (polling would read the registry every few tens of ms for as long as a wait lasts, taking
   * CPU from serving and load from etcd). `otherwise` once the hand-over timeout passes or `stop`
   * aborts; a registry that cannot be watched rejects.
   */
  private async whenShards<T>(what: string, decide: (records: ShardRecord[]) => T | undefined, otherwise: T, stop?: AbortSignal): Promise<T> {
    let open = true;
    let settle!: (value: T) => void;
    const decided = new Promise<T>((resolve) => (settle = (value) => open && ((open = false), resolve(value))));
    const judge = (records: ShardRecord[]): void => {
      if (!open) return;
      const answer = timedSync(what, () => decide(records));
      if (answer !== undefined) settle(answer);
    };
    const timer = setTimeout(() => settle(otherwise), this.timings.handoffTimeoutMs);
    const onStop = (): void => settle(otherwise);
    stop?.addEventListener('abort', onStop, { once: true });
    let view: ShardRecordsView | null = null;
    try {
      view = await Promise.race([this.shardRecords(), decided.then(() => null)]);
      if (view) {
        view.waiters.add(judge);
        if (view.records) judge(view.records);
      }
      return await decided;
    } finally {
      view?.waiters.delete(judge);
      clearTimeout(timer);
      stop?.removeEventListener('abort', onStop);
    }
  }

  /**
   * The shard records as one watch keeps them, started on first use (at joining a plan) and stopped
   * when the shard leaves; resolves once the watch holds its first full read. Its first events (the
   * shard's own record at join) also make the etcd client build its watch-event decoders then, not at
   * the first plan switch. A watch that cannot be created is tried again at the next wait.
   */
  private shardRecords(): Promise<ShardRecordsView> {
    if (!this.recordsView) {
      const view: ShardRecordsView = { records: null, waiters: new Set() };
      let synced!: () => void;
      const first = new Promise<void>((resolve) => (synced = resolve));
      const watch = this.registry.watchShards(
        (records) => {
          view.records = records;
          synced();
          for (const judge of [...view.waiters]) judge(records);
        },
        { pace: this.atStepEnd },
      );
      this.recordsWatch = watch;
      this.recordsView = watch.then(() => first.then(() => view));
      this.recordsView.catch(() => {
        this.recordsView = null;
        this.recordsWatch = null;
      });
    }
    return this.recordsView;
  }

  /**
   * A switch's record written in the quiet part of a step (StepEnds): the write, etcd's work and every
   * watcher's handling of the event then fall while the router runs its own part, not on its calls.
   */
  private async publishAtStepEnd(change: Partial<Pick<ShardRecord, 'layers' | 'planVersion' | 'health' | 'draining'>>): Promise<void> {
    await this.compute.stepEnds.next();
    await this.publish(change);
  }

  private async publish(change: Partial<Pick<ShardRecord, 'layers' | 'planVersion' | 'health' | 'draining'>>): Promise<void> {
    this.record = { ...this.record, ...change, weightBytes: this.compute.experts.weightBytes, weightFormat: this.compute.experts.weightFormat };
    await timedSync('record-publish', () => this.registration?.update(this.record));
  }
}

function sameLayers(a: readonly { layer: number; experts: readonly number[] }[], b: readonly { layer: number; experts: readonly number[] }[]): boolean {
  const key = (ls: readonly { layer: number; experts: readonly number[] }[]): string =>
    JSON.stringify(ls.filter((l) => l.experts.length > 0).map((l) => [l.layer, [...l.experts].sort((x, y) => x - y)]).sort((x, y) => (x[0] as number) - (y[0] as number)));
  return key(a) === key(b);
}

/** The experts of `a` that `b` does not list. */
function minus(a: Layers, b: readonly { layer: number; experts: readonly number[] }[]): Layers {
  return a.map((l) => ({ layer: l.layer, experts: l.experts.filter((e) => !(b.find((x) => x.layer === l.layer)?.experts.includes(e) ?? false)) })).filter((l) => l.experts.length > 0);
}

async function anyAsync<T>(items: readonly T[], test: (item: T) => Promise<boolean>): Promise<boolean> {
  for (const item of items) if (await test(item)) return true;
  return false;
}

const count = (layers: Layers): number => layers.reduce((a, l) => a + l.experts.length, 0);

/** A slot name for a shard joining a plan whose slots are all taken: `shard-N`, first N free in plan and registry. */
function newSlotName(plan: PlacementPlan, taken: ReadonlySet<string>): string {
  for (let i = Object.keys(plan.shards).length; ; i++) {
    const name = `shard-${i}`;
    if (!(name in plan.shards) && !taken.has(name)) return name;
  }
}
