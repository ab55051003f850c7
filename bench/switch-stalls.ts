/**
 * The shards' serving-thread stalls and graph builds around the rebalance of one traced bench:rebalance run:
 * reads the run's JSON (its `eventTimes`) and the trace directory it wrote (bench/switch-trace.mjs), and
 * counts, for the shards' main threads, the event-loop stalls (a 5 ms timer > 15 ms late) and the
 * onnxruntime session creations in [rebalance stored, every shard switched] and in the steady window
 * 1–9 s after it, and (with --cpu-profile-seconds) where the shards' main threads spent the rebalance window
 * according to their V8 CPU profiles. With --write, adds them to the JSON as `servingThread`.
 *   node --import tsx bench/switch-stalls.ts --result bench/results/rebalance-….json --trace-dir .tmp/trace [--write]
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { result: { type: 'string' }, 'trace-dir': { type: 'string' }, write: { type: 'boolean', default: false } } });
if (!values.result || !values['trace-dir']) throw new Error('usage: switch-stalls --result RUN.json --trace-dir DIR [--write]');

interface TraceRecord {
  readonly pid: number;
  readonly thread: number;
  readonly kind: string;
  readonly at: number;
  readonly ms?: number;
  readonly argv?: string;
}
interface Counted {
  readonly count: number;
  readonly longestMs: number;
  readonly totalMs: number;
}

const run = JSON.parse(await readFile(values.result, 'utf8')) as { eventTimes: { event: string; atEpochMs: number; switchedEpochMs: number }[]; servingThread?: unknown };
const rebalance = run.eventTimes.find((e) => e.event.startsWith('rebalance'));
if (!rebalance) throw new Error(`${values.result} has no rebalance event`);
const records: TraceRecord[] = [];
for (const name of (await readdir(values['trace-dir'])).filter((n) => n.endsWith('.jsonl'))) {
  for (const line of (await readFile(join(values['trace-dir'], name), 'utf8')).split('\n')) if (line) records.push(JSON.parse(line) as TraceRecord);
}
// Shard processes are those whose argv starts with the shard's flags (the router's with `serve`).
const shardPids = new Set(records.filter((r) => r.kind === 'start' && r.thread === 0 && !/\bserve\b/.test(r.argv ?? '')).map((r) => r.pid));
const onShardThreads = (kind: string, from: number, to: number): Counted => {
  const ms = records.filter((r) => r.kind === kind && r.thread === 0 && shardPids.has(r.pid) && r.at >= from && r.at <= to).map((r) => r.ms ?? 0);
  return { count: ms.length, longestMs: Math.max(0, ...ms), totalMs: ms.reduce((a, b) => a + b, 0) };
};
const window = { from: rebalance.atEpochMs, to: rebalance.switchedEpochMs };

interface CpuProfile {
  readonly nodes: readonly { id: number; callFrame: { functionName: string }; children?: readonly number[] }[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}
/** Functions whose presence on a sample's stack puts the sample in a category (the first that matches). */
const CATEGORIES: readonly [string, string][] = [
  ['graphBuilds', 'OnnxruntimeSessionHandler'],
  ['graphModels', 'buildRoutedExpertsGraph'],
];
/** Milliseconds of the shards' main-thread profiles (time on stack) in [from, to], per category and busy in all. */
async function profileMs(from: number, to: number): Promise<Record<string, number>> {
  const out: Record<string, number> = { busy: 0, ...Object.fromEntries(CATEGORIES.map(([name]) => [name, 0])) };
  for (const pid of shardPids) {
    const started = records.find((r) => r.pid === pid && r.thread === 0 && r.kind === 'profile');
    let profile: CpuProfile;
    try {
      profile = JSON.parse(await readFile(join(values['trace-dir']!, `${pid}.cpuprofile`), 'utf8')) as CpuProfile;
    } catch {
      continue; // not profiled (no --cpu-profile-seconds), or still running when the bench ended
    }
    if (!started) continue;
    const parent = new Map<number, number>();
    for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const categoryOf = new Map<number, string | null>();
    const category = (id: number): string | null => {
      if (categoryOf.has(id)) return categoryOf.get(id)!;
      const names: string[] = [];
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) names.push(byId.get(at)!.callFrame.functionName);
      const found = CATEGORIES.find(([, fn]) => names.includes(fn))?.[0] ?? null;
      categoryOf.set(id, found);
      return found;
    };
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i]!;
      const at = started.at + (t - profile.startTime) / 1000;
      if (at < from || at > to) continue;
      const id = profile.samples[i]!;
      if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
      const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
      out.busy! += ms;
      const c = category(id);
      if (c) out[c]! += ms;
    }
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round(v * 10) / 10]));
}
const steady = { from: rebalance.switchedEpochMs + 1000, to: rebalance.switchedEpochMs + 9000 };
const servingThread = {
  how: 'shard main threads, from bench/switch-trace.mjs: stall records (5 ms timer > 15 ms late) and session creations (wall ms) in [rebalance stored, every shard switched] and in the steady window 1-9 s after',
  shards: shardPids.size,
  rebalanceMs: window.to - window.from,
  rebalanceStallsOver15ms: onShardThreads('stall', window.from, window.to),
  rebalanceGraphBuilds: onShardThreads('create', window.from, window.to),
  steadyStallsOver15ms: onShardThreads('stall', steady.from, steady.to),
  profileHow: 'V8 CPU profiles of the shard main threads (0.5 ms sampling; time on stack, which on a shared core includes waiting for it), rebalance window +-50 ms: busy (not idle), session creation (OnnxruntimeSessionHandler), ONNX model bytes (buildRoutedExpertsGraph)',
  profileMs: await profileMs(window.from - 50, window.to + 50),
};
process.stdout.write(`${JSON.stringify(servingThread, null, 2)}\n`);
if (values.write) await writeFile(values.result, `${JSON.stringify({ ...run, servingThread }, null, 2)}\n`);
