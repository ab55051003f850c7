import { readFileSync } from 'node:fs';
import type { CpuThrottling } from './shard-cgroups.js';

/** One second's reading in bench/rebalance.ts: the router's per-shard and imbalance metric lines, each cgroup's throttling. */
export interface ShardSample {
  /** performance.now() when it was asked for. */
  readonly t: number;
  /** Lines of expertmesh_dispatch_bytes_total{…} and expertmesh_expert_imbalance_ratio{…} from the router's /metrics. */
  readonly metrics: readonly string[];
  readonly throttling: Readonly<Record<string, CpuThrottling>>;
  /** CPU time (user + system) each shard process has used so far, by the bench's shard name. */
  readonly cpuMs?: Readonly<Record<string, number>>;
  /** CPU time the router process has used so far (ms): its share of a step, which balancing the shards does not change. */
  readonly routerCpuMs?: number;
}

/** User + system CPU time of a process so far (ms, /proc/PID/stat at 100 ticks a second), null once it is gone. */
export function processCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

/** What the shards got and how they were throttled over one window, from the samples nearest inside its ends. */
export interface PerShardWindow {
  readonly seconds: number;
  /** Bytes the router sent each shard (hidden rows and expert pairs: the work it asked of it), by the router's shard label. */
  readonly sentBytes: Readonly<Record<string, number>>;
  /** Max over mean of sentBytes over the shards: the measured imbalance, all layers together. */
  readonly sentMaxOverMean: number | null;
  /** The router's expertmesh_expert_imbalance_ratio at the window's end, worst layer per phase (current: the last check's). */
  readonly routerImbalance: Readonly<Record<string, number>>;
  /** CPU each shard used (ms per second of window: 1000 is a whole core), and the max over the mean of it: the work each shard did. */
  readonly cpuMsPerSecond: Readonly<Record<string, number>>;
  readonly cpuMaxOverMean: number | null;
  /** The router's mean round trip of a call to each shard over the window (ms), by its shard label. */
  readonly callMs: Readonly<Record<string, number>>;
  /** Calls the router made to each shard per second of window, by its shard label. */
  readonly callsPerSecond: Readonly<Record<string, number>>;
  /**
   * CPU each shard used per call it answered (ms), by the bench's shard name: the shard's cost of a call, which is what
   * balancing can even out (a fixed part every call pays, and the experts' part that follows their rows).
   */
  readonly cpuMsPerCall: Readonly<Record<string, number>>;
  /** CPU the router used per second of window (ms/s; null without its samples). */
  readonly routerCpuMsPerSecond: number | null;
  /** Per cgroup: the share of CFS periods it was throttled in, and throttled ms per second of window. */
  readonly throttling: Readonly<Record<string, { readonly throttledPeriodsPct: number; readonly throttledMsPerSecond: number }>>;
}

/** A Prometheus text line's labels and value. */
function parseLine(line: string): { labels: Map<string, string>; value: number } {
  const labels = new Map([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!] as const));
  return { labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) };
}

/** The value of metric `name`'s lines by shard label (those whose labels match `where`). */
function byShard(sample: ShardSample, name: string, where: (labels: Map<string, string>) => boolean = () => true): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of sample.metrics) {
    if (!line.startsWith(`${name}{`)) continue;
    const { labels, value } = parseLine(line);
    if (where(labels)) out.set(labels.get('shard') ?? '?', value);
  }
  return out;
}
const sentByShard = (sample: ShardSample): Map<string, number> => byShard(sample, 'expertmesh_dispatch_bytes_total', (l) => l.get('direction') === 'sent');

const maxOverMean = (xs: readonly number[]): number | null => {
  const mean = xs.reduce((x, y) => x + y, 0) / Math.max(1, xs.length);
  return mean > 0 ? round(Math.max(...xs) / mean, 3) : null;
};

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

/**
 * The window [from, to) between the first sample at or after `from` and the last at or before `to`; null with fewer than
 * two. `addresses` gives each shard's address (the router's shard label) by the bench's name, to join CPU with calls.
 */
export function perShardWindow(samples: readonly ShardSample[], from: number, to: number, addresses: Readonly<Record<string, string>> = {}): PerShardWindow | null {
  const inside = samples.filter((s) => s.t >= from && s.t <= to).sort((a, b) => a.t - b.t);
  const first = inside[0];
  const last = inside.at(-1);
  if (!first || !last || first === last) return null;
  const seconds = (last.t - first.t) / 1000;
  const a = sentByShard(first);
  const sentBytes: Record<string, number> = {};
  for (const [shard, v] of sentByShard(last)) sentBytes[shard] = v - (a.get(shard) ?? 0);
  const cpuMsPerSecond: Record<string, number> = {};
  for (const [name, end] of Object.entries(last.cpuMs ?? {})) {
    const start = first.cpuMs?.[name];
    if (start !== undefined) cpuMsPerSecond[name] = round((end - start) / seconds, 1);
  }
  const callMs: Record<string, number> = {};
  const callsPerSecond: Record<string, number> = {};
  const [sumA, countA] = [byShard(first, 'expertmesh_shard_call_duration_seconds_sum'), byShard(first, 'expertmesh_shard_call_duration_seconds_count')];
  const countB = byShard(last, 'expertmesh_shard_call_duration_seconds_count');
  for (const [shard, sum] of byShard(last, 'expertmesh_shard_call_duration_seconds_sum')) {
    const calls = (countB.get(shard) ?? 0) - (countA.get(shard) ?? 0);
    if (calls > 0) callMs[shard] = round((1000 * (sum - (sumA.get(shard) ?? 0))) / calls, 2);
    callsPerSecond[shard] = round(calls / seconds, 1);
  }
  const cpuMsPerCall: Record<string, number> = {};
  for (const [name, ms] of Object.entries(cpuMsPerSecond)) {
    const perSecond = callsPerSecond[addresses[name] ?? ''];
    if (perSecond) cpuMsPerCall[name] = round(ms / perSecond, 2);
  }
  const routerImbalance: Record<string, number> = {};
  for (const line of last.metrics) {
    if (!line.startsWith('expertmesh_expert_imbalance_ratio{')) continue;
    const { labels, value } = parseLine(line);
    const phase = labels.get('phase') ?? '?';
    routerImbalance[phase] = round(Math.max(routerImbalance[phase] ?? 0, value), 3);
  }
  const throttling: Record<string, { throttledPeriodsPct: number; throttledMsPerSecond: number }> = {};
  for (const [name, end] of Object.entries(last.throttling)) {
    const start = first.throttling[name] ?? { periods: 0, throttledPeriods: 0, throttledMs: 0 };
    const periods = end.periods - start.periods;
    throttling[name] = { throttledPeriodsPct: periods > 0 ? round((100 * (end.throttledPeriods - start.throttledPeriods)) / periods, 1) : 0, throttledMsPerSecond: round((end.throttledMs - start.throttledMs) / seconds, 1) };
  }
  const routerCpuMsPerSecond = first.routerCpuMs === undefined || last.routerCpuMs === undefined ? null : round((last.routerCpuMs - first.routerCpuMs) / seconds, 1);
  return { seconds: round(seconds, 2), routerCpuMsPerSecond, sentBytes, sentMaxOverMean: maxOverMean(Object.values(sentBytes)), cpuMsPerSecond, cpuMaxOverMean: maxOverMean(Object.values(cpuMsPerSecond)), callMs, callsPerSecond, cpuMsPerCall, routerImbalance, throttling };
}
