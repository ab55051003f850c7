/**
 * The shards' serving-thread stalls and graph builds around the rebalance of one traced bench:rebalance run:
 * reads the run's JSON (its `eventTimes`) and the trace directory it wrote (bench/switch-trace.mjs), and
 * counts, for the shards' main threads, the event-loop stalls (a 5 ms timer > 15 ms late) and the
 * onnxruntime session creations in [rebalance stored, every shard switched] and in the steady window
 * 1–9 s after it. With --write, adds them to the JSON as `servingThread`.
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
const steady = { from: rebalance.switchedEpochMs + 1000, to: rebalance.switchedEpochMs + 9000 };
const servingThread = {
  how: 'shard main threads, from bench/switch-trace.mjs: stall records (5 ms timer > 15 ms late) and session creations (wall ms) in [rebalance stored, every shard switched] and in the steady window 1-9 s after',
  shards: shardPids.size,
  rebalanceMs: window.to - window.from,
  rebalanceStallsOver15ms: onShardThreads('stall', window.from, window.to),
  rebalanceGraphBuilds: onShardThreads('create', window.from, window.to),
  steadyStallsOver15ms: onShardThreads('stall', steady.from, steady.to),
};
process.stdout.write(`${JSON.stringify(servingThread, null, 2)}\n`);
if (values.write) await writeFile(values.result, `${JSON.stringify({ ...run, servingThread }, null, 2)}\n`);
