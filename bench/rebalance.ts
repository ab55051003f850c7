/**
 * Rebalancing and elastic membership under steady skewed streaming load, on a real loopback cluster laid
 * out as `expertmesh up` lays it out (etcd, 4 shard processes, a `serve` router), without TLS: the
 * checkpoint's gate favours four experts that the first plan puts on one shard; --concurrency client
 * loops stream greedy completions back to back. Timeline: the router's closed loop (--rebalance-interval
 * 1s) sees the skew and stores a plan; a fifth shard joins (no --slot: it takes a new slot and
 * re-plans); that shard is sent SIGTERM and leaves (it hands its experts back first). For each event,
 * the windows before it, during it (until every shard reports the new plan) and after it: tokens/s,
 * time per output token p50/p99, the longest gap between two tokens of any stream, failed requests,
 * and outputs that differ from the first ones. The join is shown twice: from starting the new process, and from
 * the re-plan it stores (without its process start-up). --trace-dir loads bench/switch-trace.mjs into the router
 * and the shards and adds the longest gaps and the events, in epoch ms, to the JSON; bench/core-probe.ts adds each
 * core's busy time, etcd's and the client loops' CPU, and the client loops' own stalls, in the same directory.
 * --pinned lays the cluster out as separate machines would see it (as bench/pinned-cluster.ts does): the
 * router alone on core 0 (`taskset`, one onnxruntime thread), and on core 1 every shard (one onnxruntime
 * thread each), etcd and this process's client loops, so what shards do while they switch cannot take the
 * router's core.
 * --cpu-profile-seconds N (with --trace-dir) also writes a V8 CPU profile of each traced process's first N seconds there.
 * --heap-snapshots 30,90,150 (with --trace-dir) writes V8 heap snapshots of the router at those seconds after its start;
 * every traced process also records its heap and its garbage collection time each second (`heap` records).
 * --router-arg=--flag=value and --shard-arg=--flag=value (repeatable) pass flags to the router (`serve`) and to every
 * shard, e.g. --router-arg=--dispatch-hedge-p99-multiple=0 (no hedging) or --shard-arg=--expert-worker=on; --label
 * names the variant in the JSON.
 * The bench follows the plan and the shard records in a child process whose autogroup is at nice 19
 * (bench/registry-follower.ts): its client loops' token timestamps are then not late by the watches' work at a switch,
 * and that work waits for the shards. --registry-follower in-process puts the watches back in this process (before 2026-12-01).
 * Each event is also compared with steady state at its own length (bench/steady-windows.ts): the longest gaps of
 * windows as long as its switch, slid over the steady periods nearest to it that hold 20 such windows side by side;
 * the JSON's `steadySameLength` and the second table give the steady p50 / p90 / max and the switch's percentile
 * among them (`steadyAdjacent`: the same with only the periods just before and just after it, rounds 6–11's method;
 * `steadyWholeRun`: every steady period of the run).
 * --null-events N (default 3) adds N events that do nothing: an interval of a real switch's length (0.8, 3.5 and
 * 6.4 s in turn), started as the real events are (a window's length after the previous switch), judged by the same
 * code. A switch that changes nothing is above steady p90 in about one run in ten if the test is fair; the null
 * events measure that, run after run. They are spread after the rebalance and the join in turn (not after the leave:
 * the run would reach the rougher steady state that begins 100–110 s into the load).
 * --extra-steady-seconds S (default 0) holds S s more of steady state before the leave: with ~10 s between events a
 * 6.4 s switch has only ~1.5 independent steady windows per period, and a p90 of few draws is exceeded more often
 * than one time in ten. But 100–110 s into the load the router's steps turn rougher for good (round 12: every ~10th
 * step ~90 ms longer), so the defaults keep every event and its steady periods within the first ~95 s. (Round 13
 * found it was V8's old-generation sizing, not a leak, and fixed it: services/router/src/serving/heap-growth.ts.)
 * --after-leave-seconds S keeps the load running S s after the leave's switch (default one window).
 * --shard-cpu-quota C (cores, e.g. 0.2) puts every shard's process group into a CPU cgroup of its own with that quota
 * (bench/shard-cgroups.ts; --shard-cpu-period-ms, default 100): each shard is then a small machine of its own, so the
 * shard with the hot experts is throttled instead of taking the others' CPU, and a balanced plan can shorten a step.
 * --shard-quota-from listening sets each quota only once its shard listens (default spawn: from its first instruction),
 * so that a start-up under a small quota, which is not measured, does not take minutes.
 * Needs root and a cgroup cpu controller. The shards' quotas together must stay below the cores they run on (core 1
 * alone with --pinned). With it (or --per-shard-samples) the bench reads, each second, the router's dispatched bytes per
 * shard (the measured max/mean tokens per shard), its imbalance gauges, and each cgroup's throttling; the JSON's
 * `perShard` gives them for every event's before/during/after windows, with each shard's CPU per call it answered
 * (`cpuMsPerCall`: its CPU over the router's calls to it; `shardAddresses` joins the bench's names with the router's
 * labels) and the router's CPU (`routerCpuMsPerSecond`, its share of a step). --rebalance-only ends the run one window after the rebalance (no join, no leave, no null events).
 * --expert-width N makes the demo checkpoint's experts N wide (moe_intermediate_size; demo: 64, 2048 has a bench
 * expert's 1.5 M parameters): at 64 a shard's CPU follows its calls, not its tokens, so balancing tokens cannot pay.
 * --control-at-seconds S (with --rebalance-only) is the run to compare a rebalance run with: the router's loop weighs
 * the load at every interval but never re-plans (threshold 1000), and the event "no rebalance (control)" is taken S s
 * after the load starts, lasting --control-switch-seconds, so its before/after windows fall where the rebalance's did.
 * --leave-only measures the leave alone, in about half the run: five shards from the start (a plan of five slots;
 * the fifth, shard-4, is the one that leaves). Five slots spread the four hot experts over four shards, so the
 * closed loop finds nothing to rebalance (and its threshold is set out of reach, see below): after a window and the warm-up, --null-events null events all of the
 * leave's length (6.4 s), then SIGTERM to the fifth shard. No rebalance, no join.
 * The JSON's `streams` holds every request's token times (ms from the load's start) and `intervals` every event's,
 * so that the comparison can be recomputed.
 *   npm run bench:rebalance [-- --concurrency 4 --max-tokens 32 --window-seconds 10 --trace-dir .tmp/trace --pinned --load-rest 3 --null-events 6]
 *   npm run bench:rebalance -- --pinned --rebalance-only --shard-cpu-quota 0.1 --shard-cpu-period-ms 10 [--per-shard-samples]
 *   npm run bench:rebalance -- --pinned --rebalance-only --expert-width 2048 --shard-cpu-quota 0.2 --shard-cpu-period-ms 10 [--control-at-seconds 58 --control-switch-seconds 5]
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdProcess, EtcdRegistry, planPlacement, type PlacementPlan, type ShardRecord } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { startShardProcess } from '../test/helpers/shard-process.js';
import { startBenchServer, timedStream, type StreamTiming } from './bench-server.js';
import { startCoreProbe } from './core-probe.js';
import { startRegistryFollower } from './registry-follower.js';
import { pinnedLayout, pinProcess } from './pin-cores.js';
import { ShardCpuCgroups } from './shard-cgroups.js';
import { perShardWindow, processCpuMs, type ShardSample } from './shard-samples.js';
import { compareEvent, steadyPeriods } from './steady-windows.js';

const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '4' },
    'max-tokens': { type: 'string', default: '32' },
    'window-seconds': { type: 'string', default: '10' },
    out: { type: 'string' },
    // Loads bench/switch-trace.mjs into the router and every shard: their event-loop stalls, onnxruntime
    // session creations and first runs, and their log lines, as JSON lines under this directory.
    'trace-dir': { type: 'string' },
    pinned: { type: 'boolean', default: false },
    // With --trace-dir: a V8 CPU profile of each traced process's first N seconds, in the trace directory.
    'cpu-profile-seconds': { type: 'string' },
    // With --trace-dir: V8 heap snapshots of the router's main thread at these seconds after its start (e.g. 30,90,150).
    'heap-snapshots': { type: 'string' },
    // Passed to every shard (`--load-rest`): how long a shard rests after each graph it builds, in build times.
    'load-rest': { type: 'string' },
    // Extra flags, one per option, as --router-arg=--flag=value: for `serve` and for every shard.
    'router-arg': { type: 'string', multiple: true, default: [] },
    'shard-arg': { type: 'string', multiple: true, default: [] },
    // Node/V8 flags for the router's process only, e.g. --router-node-arg=--max-semi-space-size=64.
    'router-node-arg': { type: 'string', multiple: true, default: [] },
    // Node/V8 flags for every shard's process (before the product's own, --no-memory-reducer: --shard-node-arg=--memory-reducer turns it back on).
    'shard-node-arg': { type: 'string', multiple: true, default: [] },
    // Names the variant (code or flags) in the JSON.
    label: { type: 'string' },
    // Who follows the plan and the shard records: a child process at the lowest priority (bench/registry-follower.ts),
    // or etcd watches in this process, beside the client loops whose token times are measured (before 2026-12-01).
    'registry-follower': { type: 'string', default: 'child' },
    'null-events': { type: 'string', default: '3' },
    // Steady state added before the leave: more independent windows as long as the longest switch.
    'extra-steady-seconds': { type: 'string', default: '0' },
    // How long the load runs after the leave's switch (default: one window): longer shows the steady state after it.
    'after-leave-seconds': { type: 'string' },
    // Cores per shard (a CPU cgroup each, bench/shard-cgroups.ts) and the CFS period they are counted over.
    'shard-cpu-quota': { type: 'string' },
    'shard-cpu-period-ms': { type: 'string', default: '100' },
    // When the quota starts: at the shard's spawn (its start-up under the quota too), or once it listens (a start-up
    // under a small quota can take minutes and is not measured).
    'shard-quota-from': { type: 'string', default: 'spawn' },
    // Per-shard samples each second (dispatched bytes, imbalance gauges, throttling) without quotas too.
    'per-shard-samples': { type: 'boolean', default: false },
    // Ends one window after the rebalance: no join, no leave, no null events.
    'rebalance-only': { type: 'boolean', default: false },
    // The demo checkpoint's routed (and shared) expert width, moe_intermediate_size (demo: 64): wider experts make a
    // shard's compute follow the experts it runs rather than its calls' fixed cost (2048: a bench-sized expert).
    'expert-width': { type: 'string', default: '64' },
    // With --rebalance-only, a control run: the router's loop runs but never re-plans (threshold 1000), and the
    // event "no rebalance (control)" is taken at this many seconds after the load starts, with a "switch" of
    // --control-switch-seconds, so its before/after windows fall where a rebalance run's did.
    'control-at-seconds': { type: 'string' },
    'control-switch-seconds': { type: 'string', default: '0' },
    // Five shards from the start, then only the leave (and null events of its length): no join.
    'leave-only': { type: 'boolean', default: false },
  },
});
const layout = values.pinned ? pinnedLayout() : null;
// Everything this process starts from here on (etcd, the shards) inherits core 1; the router is moved to core 0 once it runs.
if (layout) pinProcess(process.pid, layout.shards);
const CONCURRENCY = Number(values.concurrency);
const MAX_TOKENS = Number(values['max-tokens']);
const WINDOW_MS = Number(values['window-seconds']) * 1000;
const HOT = [0, 4, 8, 12];
const PROMPTS = Array.from({ length: 12 }, (_, i) => `Request ${i}: the load is skewed towards a few experts, number ${i * 7 + 3}`);
const CLUSTER = 'rebalance';
const NULL_EVENTS = Number(values['null-events']);
if (!Number.isInteger(NULL_EVENTS) || NULL_EVENTS < 0 || NULL_EVENTS > 30) throw new Error(`--null-events takes 0 … 30, not ${values['null-events']}`);
const EXTRA_STEADY_MS = Number(values['extra-steady-seconds']) * 1000;
if (!(EXTRA_STEADY_MS >= 0 && EXTRA_STEADY_MS <= 600_000)) throw new Error(`--extra-steady-seconds takes 0 … 600, not ${values['extra-steady-seconds']}`);
const AFTER_LEAVE_MS = values['after-leave-seconds'] === undefined ? WINDOW_MS : Number(values['after-leave-seconds']) * 1000;
if (!(AFTER_LEAVE_MS >= WINDOW_MS && AFTER_LEAVE_MS <= 600_000)) throw new Error(`--after-leave-seconds takes a window's length … 600, not ${values['after-leave-seconds']}`);
const REBALANCE_ONLY = values['rebalance-only'];
const FOLLOWER = values['registry-follower'];
if (FOLLOWER !== 'child' && FOLLOWER !== 'in-process') throw new Error(`--registry-follower must be child or in-process, not ${FOLLOWER}`);
/** The follower child's autogroup nice (null: not lowered, or followed in this process). */
let followerNice: number | null = null;
const EXPERT_WIDTH = Number(values['expert-width']);
if (!(Number.isInteger(EXPERT_WIDTH) && EXPERT_WIDTH >= 8 && EXPERT_WIDTH <= 4096)) throw new Error(`--expert-width takes an integer 8 … 4096, not ${values['expert-width']}`);
const CONTROL_AT_MS = values['control-at-seconds'] === undefined ? null : Number(values['control-at-seconds']) * 1000;
const CONTROL_SWITCH_MS = Number(values['control-switch-seconds']) * 1000;
if (CONTROL_AT_MS !== null) {
  if (!REBALANCE_ONLY) throw new Error('--control-at-seconds needs --rebalance-only');
  if (!(CONTROL_AT_MS > 0 && CONTROL_AT_MS <= 600_000)) throw new Error(`--control-at-seconds takes 0 … 600, not ${values['control-at-seconds']}`);
  if (!(CONTROL_SWITCH_MS >= 0 && CONTROL_SWITCH_MS <= 120_000)) throw new Error(`--control-switch-seconds takes 0 … 120, not ${values['control-switch-seconds']}`);
}
const LEAVE_ONLY = values['leave-only'];
if (REBALANCE_ONLY && LEAVE_ONLY) throw new Error('--rebalance-only and --leave-only exclude each other');
const SHARD_QUOTA = values['shard-cpu-quota'] === undefined ? null : Number(values['shard-cpu-quota']);
if (SHARD_QUOTA !== null) {
  // Four shards, and a fifth while it joins; with --pinned they share core 1 (with etcd and the client loops).
  const shardCores = layout ? 1 : cpus().length;
  const most = REBALANCE_ONLY ? 4 : 5; // --leave-only: five from the start
  if (!(SHARD_QUOTA > 0 && SHARD_QUOTA * most < shardCores)) throw new Error(`--shard-cpu-quota: ${most} shards × ${values['shard-cpu-quota']} cores must stay below the ${shardCores} core(s) the shards run on`);
}
const shardCgroups = SHARD_QUOTA === null ? null : ShardCpuCgroups.open(SHARD_QUOTA, Math.round(Number(values['shard-cpu-period-ms']) * 1000));
const QUOTA_FROM = values['shard-quota-from'];
if (QUOTA_FROM !== 'spawn' && QUOTA_FROM !== 'listening') throw new Error(`--shard-quota-from takes spawn or listening, not ${QUOTA_FROM}`);
const SAMPLE_SHARDS = shardCgroups !== null || values['per-shard-samples'];
/** The null events' lengths, in turn: about the rebalance's, the join's (from its process start) and the leave's switch. */
/** Steady state starts this long after the load does (the first requests' cold paths). */
const WARMUP_MS = 5000;
const NULL_LENGTHS_MS = LEAVE_ONLY ? [6400] : [800, 3500, 6400];

if (values['trace-dir']) {
  const dir = resolve(values['trace-dir']);
  await mkdir(dir, { recursive: true });
  process.env.EXPERTMESH_SWITCH_TRACE_DIR = dir;
  if (values['cpu-profile-seconds']) process.env.EXPERTMESH_SWITCH_PROFILE_SECONDS = values['cpu-profile-seconds'];
  if (values['heap-snapshots']) process.env.EXPERTMESH_SWITCH_HEAP_SNAPSHOTS = values['heap-snapshots'];
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import=${join(import.meta.dirname, 'switch-trace.mjs')}`.trim();
}
const DEMO_WIDTH = 64;
const modelDir = join(process.cwd(), '.tmp', 'models', EXPERT_WIDTH === DEMO_WIDTH ? 'demo-hot' : `demo-hot-w${EXPERT_WIDTH}`);
if (!existsSync(join(modelDir, 'config.json'))) {
  await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0, hotExperts: HOT, hotBias: 1, ...(EXPERT_WIDTH === DEMO_WIDTH ? {} : { overrides: { moe_intermediate_size: EXPERT_WIDTH } }) });
}

interface RequestRecord {
  readonly prompt: number;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly timing: StreamTiming | null;
  readonly error: string | null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Polls `check` every 50 ms; the bench fails after two minutes without it. */
const until = async (what: string, check: () => Promise<boolean>): Promise<void> => {
  const deadline = performance.now() + 120_000;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`bench: no ${what} within 2 minutes`);
    await sleep(50);
  }
};

const records: RequestRecord[] = [];
/** Every plan the bench's watch saw (performance.now()), for what each change moved. */
const plansSeen: { at: number; plan: PlacementPlan }[] = [];
/** The router's worst-layer imbalance of the plan in force, read midway through each event's after-window. */
const imbalanceReads: { after: string; atMs: number; planVersion: number; worstCurrent: number | null }[] = [];
const events: { name: string; at: number; switchedAt: number; detail: string; hedges?: HedgeCounts }[] = [];
/** The router's hedged calls so far (expertmesh_dispatch_hedges_total by outcome, summed over shards). */
type HedgeCounts = Record<'sent' | 'won' | 'wasted' | 'failed', number>;
let hedgesAtEnd: HedgeCounts | null = null;
/** With --trace-dir: every plan and shard-records change the bench's watches saw, in epoch ms. */
const registryChanges: ({ atEpochMs: number; plan: number } | { atEpochMs: number; records: string[] })[] | null = values['trace-dir'] ? [] : null;
const epochNow = (): number => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;
let running = true;
const etcd = await EtcdProcess.start();
// With --trace-dir, also each core's busy time, etcd's and this process's CPU, and this process's stalls (bench/core-probe.ts).
const stopCoreProbe = values['trace-dir'] ? startCoreProbe(join(resolve(values['trace-dir']), 'bench-probe.jsonl'), etcd.clientPort) : (): void => undefined;
const registry = new EtcdRegistry([etcd.url], CLUSTER);
// The cgroups go last (the first stop pushed runs last): every shard has exited by then.
const stops: (() => Promise<void>)[] = [async () => shardCgroups?.close(), async () => etcd.stop(), async () => registry.close(), async () => stopCoreProbe()];
let shardsStarted = 0;
/** A shard process, in a CPU cgroup of its own from its first instruction with --shard-cpu-quota. */
const startShard = async (): ReturnType<typeof startShardProcess> => {
  const name = `shard-${shardsStarted++}`;
  const shard = await startShardProcess(shardArgs, {
    nodeArgs: values['shard-node-arg'],
    onSpawned: (pid) => {
      shardPids.set(name, pid);
      try {
        shardCgroups?.place(name, pid, QUOTA_FROM === 'spawn');
      } catch (e) {
        // The shard is not stopped by anyone else yet: it must not outlive a failed placement.
        process.kill(-pid, 'SIGKILL');
        throw e;
      }
    },
  });
  // Stopped at the end whatever happens next: shards started together must not outlive one that failed to start.
  stops.push(shard.stop);
  shardAddresses[name] = shard.address;
  if (QUOTA_FROM === 'listening') shardCgroups?.limit(name);
  return shard;
};
const samples: ShardSample[] = [];
const shardPids = new Map<string, number>();
/** Each shard's address (the router's shard label in its metrics) by the bench's name: joins a shard's CPU with its calls. */
const shardAddresses: Record<string, string> = {};
const shardArgs = [
  '--model', modelDir, '--cluster', CLUSTER, '--etcd', etcd.url, '--listen', '127.0.0.1:0', '--lease-ttl', '10',
  ...(values['load-rest'] ? ['--load-rest', values['load-rest']] : []),
  ...values['shard-arg'],
];
/** When the client loops started and when they were told to stop: the ends of the steady periods. */
let loadStartedAt = 0;
let loadStoppedAt = 0;
try {
  const { config, fingerprint } = await readCheckpointIdentity(modelDir);
  const firstSlots = Array.from({ length: LEAVE_ONLY ? 5 : 4 }, (_, i) => `shard-${i}`);
  await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: firstSlots, bytesPerExpert: 1 }));
  // startShard pushes each shard's stop itself.
  const first = await Promise.all(firstSlots.map(() => startShard()));
  const router = await startBenchServer([
    '--model', modelDir, '--served-model-name', 'demo', '--cluster', CLUSTER, '--etcd', etcd.url, '--wire-dtype', 'float32', '--combine-dtype', 'float32',
    // --leave-only: the loop runs its checks as always but stores no plan (a threshold no load reaches): the start's
    // plan of five slots carries no load basis, so the leave's plan would be re-planned by load within the leave.
    '--rebalance-interval', '1s', '--rebalance-threshold', LEAVE_ONLY ? '100' : '1.3', '--rebalance-min-tokens', '20000', '--load-window', '20s',
    ...(layout ? ['--intra-op-threads', '1'] : []),
    ...values['router-arg'],
    // Last, so that it wins: the control run's loop weighs the load at every interval as a rebalance run's does, and never re-plans.
    ...(CONTROL_AT_MS !== null ? ['--rebalance-threshold', '1000'] : []),
  ], values['router-node-arg']);
  stops.push(router.stop);
  if (layout) pinProcess(router.process.pid!, layout.router);
  await until('ready router', async () => (await fetch(`${router.url}/ready`)).status === 200);
  // The bench follows the plan and the shard records by watches, as the router and the shards do, rather than
  // polling etcd every 50 ms: polling only while a switch is awaited put work on the shards' core (etcd's reads,
  // this process's parsing) in the "during" windows that the steady windows do not have.
  let plan: PlacementPlan | null = null;
  // A closure: the watch assigns `plan` in a callback, which narrowing at a call site cannot see.
  const planVersion = (): number => plan?.version ?? 0;
  let live: ShardRecord[] = [];
  let wake: (() => void)[] = [];
  const changed = (): void => {
    const waiting = wake;
    wake = [];
    for (const w of waiting) w();
  };
  /** When the follower saw the newest change (performance.now() time): events are timed by the change, not by when this process got it. */
  let lastChangeAt = 0;
  const onPlan = (p: PlacementPlan | null, atEpochMs: number): void => {
    lastChangeAt = atEpochMs - performance.timeOrigin;
    plan = p;
    if (p) plansSeen.push({ at: atEpochMs - performance.timeOrigin, plan: p });
    registryChanges?.push({ atEpochMs, plan: p?.version ?? 0 });
    changed();
  };
  const onRecords = (records: ShardRecord[], atEpochMs: number): void => {
    lastChangeAt = atEpochMs - performance.timeOrigin;
    live = records;
    // Each record as slot:health:planVersion[:draining]:experts, to place a leave's steps against the token gaps.
    registryChanges?.push({ atEpochMs, records: records.map((r) => `${r.slot}:${r.health}:${r.planVersion}${r.draining ? ':draining' : ''}:${r.layers.reduce((a, l) => a + l.experts.length, 0)}`).sort() });
    changed();
  };
  if (FOLLOWER === 'child') {
    const follower = await startRegistryFollower(etcd.url, CLUSTER, (c) => ('records' in c ? onRecords(c.records, c.atEpochMs) : onPlan(c.plan, c.atEpochMs)));
    followerNice = follower.autogroupNice;
    stops.push(follower.stop);
  } else {
    stops.push(await registry.watchPlan((p) => onPlan(p, epochNow())));
    stops.push(await registry.watchShards((records) => onRecords(records, epochNow())));
  }
  /** Resolves once `check` holds on the watched plan and records; the bench fails after two minutes without it. */
  const when = async (what: string, check: () => boolean): Promise<void> => {
    const deadline = performance.now() + 120_000;
    while (!check()) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`bench: no ${what} within 2 minutes`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        wake.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  };
  /** The router's CPU so far, for a sample (nothing once it is gone). */
  const routerCpu = (): { routerCpuMs?: number } => {
    const ms = processCpuMs(router.process.pid!);
    return ms === null ? {} : { routerCpuMs: ms };
  };
  /** Each second: bytes dispatched per shard, the router's imbalance gauges, each cgroup's throttling. */
  const sampler = SAMPLE_SHARDS
    ? setInterval(() => {
        const t = performance.now();
        void fetch(`${router.url}/metrics`)
          .then((r) => r.text())
          .then((text) => samples.push({ t, metrics: text.split('\n').filter((l) => l.startsWith('expertmesh_dispatch_bytes_total{') || l.startsWith('expertmesh_expert_imbalance_ratio{') || l.startsWith('expertmesh_shard_call_duration_seconds_sum{') || l.startsWith('expertmesh_shard_call_duration_seconds_count{')), cpuMs: Object.fromEntries([...shardPids].flatMap(([n, pid]) => { const ms = processCpuMs(pid); return ms === null ? [] : [[n, ms]]; })), ...routerCpu(), throttling: Object.fromEntries((shardCgroups?.names() ?? []).map((n) => [n, shardCgroups!.throttling(n)])) }))
          .catch(() => undefined);
      }, 1000)
    : null;
  stops.push(async () => clearInterval(sampler ?? undefined));
  let next = 0;
  loadStartedAt = performance.now();
  const load = Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (running) {
        const prompt = next++ % PROMPTS.length;
        const startedAt = performance.now();
        const outcome = await timedStream(router.url, '/v1/completions', { model: 'demo', prompt: PROMPTS[prompt], max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true, logprobs: 0 }).then(
          (timing) => ({ timing, error: timing.outputTokens === MAX_TOKENS ? null : `${timing.outputTokens} tokens` }),
          (e: Error) => ({ timing: null, error: e.message.slice(0, 300) }),
        );
        records.push({ prompt, startedAt, endedAt: performance.now(), ...outcome });
      }
    }),
  );
  const switched = (): boolean => {
    const current = plan;
    return (
      current !== null &&
      Object.entries(current.shards).every(([slot, layers]) => {
        const r = live.find((x) => x.slot === slot);
        return r !== undefined && r.planVersion === current.version && JSON.stringify(r.layers) === JSON.stringify(layers);
      })
    );
  };
  /** When the change that completed the switch was seen; not before the wait began (a leave's switch may be complete at its exit). */
  const untilSwitched = async (): Promise<number> => {
    const from = performance.now();
    await when('switch', switched);
    return Math.max(from, lastChangeAt);
  };
  /** When the newest plan was seen by the follower. */
  const planSeenAt = (): number => plansSeen.at(-1)?.at ?? performance.now();
  const metric = async (name: string): Promise<number> =>
    (await (await fetch(`${router.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith(`${name} `)).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0);
  /** The router's imbalance gauges for the plan in force (phase="current": its last look at the load): worst layer, or null before its window holds enough load. */
  const routerImbalance = async (after: string): Promise<void> => {
    const lines = (await (await fetch(`${router.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith('expertmesh_expert_imbalance_ratio{') && l.includes('phase="current"'));
    imbalanceReads.push({ after, atMs: performance.now() - loadStartedAt, planVersion: planVersion(), worstCurrent: lines.length ? Math.max(...lines.map((l) => Number(l.split(' ').at(-1)))) : null });
  };
  const hedges = async (): Promise<HedgeCounts> => {
    const lines = (await (await fetch(`${router.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith('expertmesh_dispatch_hedges_total{'));
    const sum = (outcome: string): number => lines.filter((l) => l.includes(`outcome="${outcome}"`)).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0);
    return { sent: sum('sent'), won: sum('won'), wasted: sum('wasted'), failed: sum('failed') };
  };
  /**
   * The null events due after real event `slot` (0 the rebalance, 1 the join): N spread over the two in turn. None
   * after the leave: from 100–110 s into the load steady state turns rougher for the rest of the run (round 12), and
   * the null events must sample the steady state the real events are judged against.
   */
  let nullsDone = 0;
  /** One null event (the next length in turn), then a window. */
  const nullEvent = async (): Promise<void> => {
    const length = NULL_LENGTHS_MS[nullsDone % NULL_LENGTHS_MS.length]!;
    nullsDone++;
    const at = performance.now();
    await sleep(length);
    events.push({ name: 'null event (no action)', at, switchedAt: performance.now(), detail: `${length} ms, nothing done` });
    await sleep(WINDOW_MS);
  };
  const nullEventsAfter = async (slot: number): Promise<void> => {
    for (let i = slot; i < NULL_EVENTS; i += 2) await nullEvent();
  };
  /** SIGTERM to `shard`: it hands its experts over first, then exits; the switch ends when the others report the plan. */
  const leave = async (shard: Awaited<ReturnType<typeof startShard>>): Promise<void> => {
    const leaveAt = performance.now();
    const exited = new Promise<number | null>((resolve) => shard.process.once('exit', (code) => resolve(code)));
    shard.process.kill('SIGTERM');
    const code = await exited;
    events.push({ name: 'that shard leaves (SIGTERM)', at: leaveAt, switchedAt: await untilSwitched(), detail: `exit code ${code}`, hedges: await hedges() });
    await sleep(WINDOW_MS / 2);
    await routerImbalance('leave');
    await sleep(AFTER_LEAVE_MS - WINDOW_MS / 2);
  };
  if (CONTROL_AT_MS !== null) {
    // The control: the same load and the same times, with the plan left as it is.
    await sleep(loadStartedAt + CONTROL_AT_MS - performance.now());
    const at = performance.now();
    await sleep(CONTROL_SWITCH_MS);
    if (planVersion() > 1) throw new Error('bench: the control run re-planned (plan v2 stored)');
    events.push({ name: 'no rebalance (control)', at, switchedAt: performance.now(), detail: `${CONTROL_SWITCH_MS} ms, plan unchanged`, hedges: await hedges() });
  } else if (LEAVE_ONLY) {
    // Steady state past the warm-up, the null events one after the other (all of the leave's length), then the fifth shard leaves.
    await sleep(WARMUP_MS + WINDOW_MS);
    for (let i = 0; i < NULL_EVENTS; i++) await nullEvent();
    await sleep(EXTRA_STEADY_MS);
    await leave(first[4]!);
  } else {
    // 1. The closed loop: the router stores a plan once its window holds enough skewed load.
    await when('rebalance', () => (plan?.version ?? 0) > 1);
    const rebalancedAt = planSeenAt();
    const rebalanceSwitched = await untilSwitched();
    events.push({ name: 'rebalance (closed loop)', at: rebalancedAt, switchedAt: rebalanceSwitched, detail: `${await metric('expertmesh_rebalance_experts_moved_total')} expert copies moved`, hedges: await hedges() });
  }
  if (!LEAVE_ONLY) {
    await sleep(WINDOW_MS / 2);
    await routerImbalance('rebalance');
    await sleep(WINDOW_MS / 2);
  }
  if (!LEAVE_ONLY && !REBALANCE_ONLY) {
    await nullEventsAfter(0);
    // 2. A fifth shard joins: started without --slot, it takes a new slot and re-plans.
    const joinAt = performance.now();
    // Watched while the process starts: it prints "listening" only once it serves its slot, after the re-plan.
    const replanned = when('join', () => plan !== null && 'shard-4' in plan.shards).then(planSeenAt);
    const fifth = await startShard();
    const replannedAt = await replanned;
    const joinSwitched = await untilSwitched();
    events.push({ name: 'a fifth shard joins', at: joinAt, switchedAt: joinSwitched, detail: 'from starting its process', hedges: await hedges() });
    // The same switch from the re-plan the new shard stores: without its process start-up (~2 s of CPU on this machine).
    events.push({ name: 'a fifth shard joins, from its re-plan', at: replannedAt, switchedAt: joinSwitched, detail: 'its slot in the plan' });
    await sleep(WINDOW_MS / 2);
    await routerImbalance('join');
    await sleep(WINDOW_MS / 2);
    await nullEventsAfter(1);
    await sleep(EXTRA_STEADY_MS);
    // 3. That shard leaves (SIGTERM): it hands its experts over first, then exits.
    await leave(fifth);
  }
  loadStoppedAt = performance.now();
  running = false;
  await load;
  hedgesAtEnd = await hedges();
} finally {
  running = false;
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
}

// The first complete output of each prompt is the reference every later one must equal.
const reference = new Map<number, string>();
for (const r of [...records].sort((a, b) => a.startedAt - b.startedAt)) if (!r.error && r.timing && !reference.has(r.prompt)) reference.set(r.prompt, r.timing.tokens.join(''));

interface Window {
  readonly tokensPerSecond: number;
  readonly tpotP50Ms: number;
  readonly tpotP99Ms: number;
  readonly longestGapMs: number;
  readonly requests: number;
  readonly failed: number;
  readonly mismatched: number;
}
const quantile = (xs: number[], q: number): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]! : 0);
/** Tokens arriving in [from, to); the gaps between two tokens of a stream that overlap it (a stall spanning a switch counts in its window). */
function stats(from: number, to: number): Window {
  const gaps: number[] = [];
  let tokens = 0;
  for (const r of records) {
    const times = r.timing?.tokenTimes ?? [];
    times.forEach((t, i) => {
      if (t >= from && t < to) tokens++;
      if (i > 0 && t >= from && times[i - 1]! < to) gaps.push(t - times[i - 1]!);
    });
  }
  const touching = records.filter((r) => r.endedAt >= from && r.startedAt < to);
  const failed = touching.filter((r) => r.error !== null);
  const mismatched = touching.filter((r) => r.error === null && r.timing!.tokens.join('') !== reference.get(r.prompt));
  return {
    tokensPerSecond: Math.round((tokens / Math.max(1, to - from)) * 1000 * 10) / 10,
    tpotP50Ms: Math.round(quantile(gaps, 0.5) * 10) / 10,
    tpotP99Ms: Math.round(quantile(gaps, 0.99) * 10) / 10,
    longestGapMs: Math.round(Math.max(0, ...gaps)),
    requests: touching.length,
    failed: failed.length,
    mismatched: mismatched.length,
  };
}
/**
 * Steady state: the load's time outside every event's switch (the join from its process start; null events too),
 * after a warm-up. Each event is compared with windows of its own switch's length slid over the nearest steady periods
 * that hold 20 of them side by side (and over the one just before it and the one just after it, as rounds 6–11 did;
 * and over the whole run's).
 */
const STEADY_STEP_MS = 50;
const STEADY_MARGIN_MS = 250;
const steady = steadyPeriods(events.map((e) => [e.at, e.switchedAt] as const), loadStartedAt + WARMUP_MS, loadStoppedAt);
const streams = records.map((r) => r.timing?.tokenTimes ?? []);
const results = events.map((e) => ({
  event: e.name,
  detail: e.detail,
  switchMs: Math.round(e.switchedAt - e.at),
  // Cumulative since the router started, read once the event's switch was done.
  hedgesSoFar: e.hedges ?? null,
  before: stats(e.at - WINDOW_MS, e.at),
  during: stats(e.at, e.switchedAt),
  after: stats(e.switchedAt, e.switchedAt + WINDOW_MS),
  steadySameLength: compareEvent(streams, steady, [e.at, e.switchedAt], 'nearest', STEADY_STEP_MS, STEADY_MARGIN_MS),
  steadyWholeRun: compareEvent(streams, steady, [e.at, e.switchedAt], 'run', STEADY_STEP_MS, STEADY_MARGIN_MS),
  steadyAdjacent: compareEvent(streams, steady, [e.at, e.switchedAt], 'adjacent', STEADY_STEP_MS, STEADY_MARGIN_MS),
  ...(SAMPLE_SHARDS
    ? { perShard: { before: perShardWindow(samples, e.at - WINDOW_MS, e.at, shardAddresses), during: perShardWindow(samples, e.at, e.switchedAt, shardAddresses), after: perShardWindow(samples, e.switchedAt, e.switchedAt + WINDOW_MS, shardAddresses) } }
    : {}),
}));
/** Every request's token times and every event's interval, in ms from the load's start (0.1 ms), to recompute the comparison. */
const fromLoad = (t: number): number => Math.round((t - loadStartedAt) * 10) / 10;
const rawStreams = records.map((r) => ({ prompt: r.prompt, startedMs: fromLoad(r.startedAt), tokenMs: (r.timing?.tokenTimes ?? []).map(fromLoad), error: r.error }));
const intervals = events.map((e) => ({ event: e.name, detail: e.detail, atMs: fromLoad(e.at), switchedMs: fromLoad(e.switchedAt) }));
/** The ten longest gaps between two tokens of a stream, in epoch ms (to match the trace's `at`). */
const epoch = (t: number): number => Math.round(performance.timeOrigin + t);
const longestGaps = records
  .flatMap((r) => (r.timing?.tokenTimes ?? []).slice(1).map((t, i) => ({ from: r.timing!.tokenTimes[i]!, to: t })))
  .sort((a, b) => b.to - b.from - (a.to - a.from))
  .slice(0, 20)
  .map((g) => ({ fromEpochMs: epoch(g.from), ms: Math.round(g.to - g.from) }));
const eventTimes = events.map((e) => ({ event: e.name, atEpochMs: epoch(e.at), switchedEpochMs: epoch(e.switchedAt) }));
const totals = { requests: records.length, failed: records.filter((r) => r.error !== null).length, hedges: hedgesAtEnd };
/** Each plan change the bench saw: the copies shards had to load (onto slots new to the plan, onto slots already in it), and the slots added and dropped. */
const planChanges = plansSeen.slice(1).map(({ at, plan: next }, i) => {
  const prev = plansSeen[i]!.plan;
  const heldBefore = (slot: string, layer: number): readonly number[] => prev.shards[slot]?.find((l) => l.layer === layer)?.experts ?? [];
  const movedTo = (slot: string): number => next.shards[slot]!.reduce((a, l) => a + l.experts.filter((e) => !heldBefore(slot, l.layer).includes(e)).length, 0);
  const slots = Object.keys(next.shards);
  const added = slots.filter((s) => !(s in prev.shards));
  return {
    version: next.version,
    atMs: fromLoad(at),
    added,
    dropped: Object.keys(prev.shards).filter((s) => !(s in next.shards)),
    movedCopies: slots.reduce((a, s) => a + movedTo(s), 0),
    movedOntoNewSlots: added.reduce((a, s) => a + movedTo(s), 0),
    movedBetweenServing: slots.filter((s) => !added.includes(s)).reduce((a, s) => a + movedTo(s), 0),
    expertBytes: next.basis?.expertBytes ?? null,
    shards: next.shards,
    // The load the plan was made with (the closed loop's window): to weigh the plan's imbalance afterwards.
    expertLoad: next.basis?.expertLoad ?? null,
  };
});

const date = new Date().toISOString().slice(0, 10);
const machine = `${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB`;
const out = values.out ?? join('bench', 'results', `rebalance-${date}.json`);
await mkdir(join('bench', 'results'), { recursive: true });
await writeFile(out, `${JSON.stringify({ date, machine, label: values.label ?? null, switchSeenBy: FOLLOWER === 'child' ? `etcd watches (plan and shard records) in a child process, autogroup nice ${followerNice ?? 'not lowered'}` : 'etcd watches (plan and shard records) in the bench process', registryFollower: FOLLOWER, routerArgs: values['router-arg'], shardArgs: values['shard-arg'], routerNodeArgs: values['router-node-arg'], shardNodeArgs: values['shard-node-arg'], layout: layout ? 'pinned: router core 0; shards, etcd and clients core 1' : 'unpinned: every process on both cores', loadRest: values['load-rest'] ?? 'default', concurrency: CONCURRENCY, maxTokens: MAX_TOKENS, windowSeconds: WINDOW_MS / 1000, hotExperts: HOT, nullEvents: NULL_EVENTS, extraSteadySeconds: EXTRA_STEADY_MS / 1000, afterLeaveSeconds: AFTER_LEAVE_MS / 1000, rebalanceOnly: REBALANCE_ONLY, leaveOnly: LEAVE_ONLY, expertWidth: EXPERT_WIDTH, controlAtSeconds: CONTROL_AT_MS === null ? null : CONTROL_AT_MS / 1000, shardCpu: shardCgroups ? { coresEach: SHARD_QUOTA, periodMs: shardCgroups.periodUs / 1000, quotaFrom: QUOTA_FROM, cgroup: `v${shardCgroups.hierarchy.version}` } : null, shardAddresses, totals, planChanges, imbalanceReads, results, ...(values['trace-dir'] ? { longestGaps, eventTimes, registryChanges } : {}), steadyPeriodsMs: steady.map(([a, b]) => [fromLoad(a), fromLoad(b)]), intervals, streams: rawStreams })}\n`);
const yesNo = (b: boolean | null): string => (b === null ? '–' : b ? 'yes' : 'no');
const cell = (w: Window): string => `${w.tokensPerSecond} | ${w.tpotP50Ms} / ${w.tpotP99Ms} | ${w.longestGapMs} | ${w.failed} | ${w.mismatched}`;
process.stdout.write(
  [
    '| event | window | tokens/s | TPOT p50 / p99 (ms) | longest token gap (ms) | failed | outputs ≠ first |',
    '|---|---|---|---|---|---|---|',
    ...results.flatMap((r) => [`| ${r.event} (${r.detail}; switch ${r.switchMs} ms) | before | ${cell(r.before)} |`, `| | during | ${cell(r.during)} |`, `| | after | ${cell(r.after)} |`]),
    '',
    '| event | switch (ms) | longest gap during (ms) | steady windows as long, nearest periods: count (side by side), p50 / p90 / max (ms) | during\'s percentile | during ≤ p90 | adjacent periods only (rounds 6–11): p90, ≤ p90 |',
    '|---|---|---|---|---|---|---|',
    ...results.map(({ event, detail, switchMs, steadySameLength: c, steadyAdjacent: o }) => `| ${event.startsWith('null') ? `${event} ${detail}` : event} | ${switchMs} | ${c.duringMs} | ${c.windows} (${c.independentWindows}), ${c.p50Ms} / ${c.p90Ms} / ${c.maxMs} | ${c.duringPercentile ?? '–'} | ${yesNo(c.duringWithinP90)} | ${o.p90Ms}, ${yesNo(o.duringWithinP90)} |`),
    ...results.flatMap((r) =>
      'perShard' in r && r.perShard
        ? [
            '',
            `${r.event}: max/mean over shards of their CPU before ${r.perShard.before?.cpuMaxOverMean ?? '–'} → after ${r.perShard.after?.cpuMaxOverMean ?? '–'} (ms/s before ${JSON.stringify(r.perShard.before?.cpuMsPerSecond ?? {})}, after ${JSON.stringify(r.perShard.after?.cpuMsPerSecond ?? {})}); of dispatched bytes ${r.perShard.before?.sentMaxOverMean ?? '–'} → ${r.perShard.after?.sentMaxOverMean ?? '–'}; router's worst-layer imbalance ${JSON.stringify(r.perShard.after?.routerImbalance ?? {})}`,
            `  CPU per call (ms) per shard, before: ${JSON.stringify(r.perShard.before?.cpuMsPerCall ?? {})}; after: ${JSON.stringify(r.perShard.after?.cpuMsPerCall ?? {})}; the router's CPU (ms/s) before ${r.perShard.before?.routerCpuMsPerSecond ?? '–'}, after ${r.perShard.after?.routerCpuMsPerSecond ?? '–'}`,
            `  throttled periods % per shard cgroup, before: ${Object.entries(r.perShard.before?.throttling ?? {}).map(([n, t]) => `${n} ${t.throttledPeriodsPct}`).join(', ') || '–'}; after: ${Object.entries(r.perShard.after?.throttling ?? {}).map(([n, t]) => `${n} ${t.throttledPeriodsPct}`).join(', ') || '–'}`,
          ]
        : [],
    ),
  ].join('\n') + `\n\nplan changes: ${planChanges.map((c) => `v${c.version}${c.added.length ? ` +${c.added.join(',')}` : ''}${c.dropped.length ? ` -${c.dropped.join(',')}` : ''} ${c.movedCopies} copies moved (${c.movedOntoNewSlots} onto new slots, ${c.movedBetweenServing} onto serving ones)`).join('; ')}; router's worst-layer imbalance midway after: ${imbalanceReads.map((r) => `${r.after} v${r.planVersion} ${r.worstCurrent?.toFixed(2) ?? '–'}`).join(', ')}\n${totals.requests} requests, ${totals.failed} failed; hedges ${JSON.stringify(totals.hedges)}; written to ${out}\n`,
);
