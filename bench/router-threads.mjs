// What ran on the router's threads around the rebalance's plan store, from a bench:rebalance --trace-dir run
// (bench/switch-trace.mjs's `threads` records: each thread's time on a CPU and waiting for one, per 20 ms slice, from
// /proc/self/task/TID/schedstat; its `sync` records: the check's slices and marks, timedSync; its onnxruntime `run`
// records over 20 ms; its `gc` and `stall` records). Threads are named by their kernel id: the main thread's is the
// pid, a worker thread's is in its own `start` record (the re-plan worker is the one with `replan-decide` slices);
// the rest (onnxruntime's calls run on libuv's pool, V8's compiler and GC helpers) are "other".
//   node bench/router-threads.mjs TRACE_DIR RESULT_JSON [--from -300] [--to 200] [--event rebalance]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { from: { type: 'string', default: '-300' }, to: { type: 'string', default: '200' }, event: { type: 'string', default: 'rebalance' } } });
const [dir, resultFile] = positionals;
if (!dir || !resultFile) throw new Error('usage: node bench/router-threads.mjs TRACE_DIR RESULT_JSON [--from -300] [--to 200] [--event rebalance]');
const result = JSON.parse(readFileSync(resultFile, 'utf8'));
const event = result.eventTimes.find((e) => e.event.startsWith(values.event));
if (!event) throw new Error(`no event starting with "${values.event}" in ${resultFile}`);
const origin = event.atEpochMs;
const from = origin + Number(values.from);
const to = origin + Number(values.to);
const rel = (t) => `${t - origin >= 0 ? '+' : ''}${Math.round(t - origin)}`;

const router = readdirSync(dir)
  .filter((f) => /^\d+\.jsonl$/.test(f))
  .map((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l)))
  .find((records) => records.some((r) => r.kind === 'start' && (r.thread ?? 0) === 0 && String(r.argv).startsWith('serve')));
if (!router) throw new Error(`no router trace (a process started with "serve") in ${dir}`);
const pid = router[0].pid;
const workerTids = new Map(router.filter((r) => r.kind === 'start' && r.thread !== 0 && r.tid).map((r) => [r.tid, r.thread]));
const planner = router.find((r) => r.kind === 'sync' && r.what === 'replan-decide')?.thread;
const roleOf = (tid) => (tid === pid ? 'main' : workerTids.get(tid) === planner ? 'replan' : workerTids.has(tid) ? `worker${workerTids.get(tid)}` : 'other');

console.log(`router ${pid}; ms relative to the bench seeing the ${event.event} plan; re-plan worker thread ${planner ?? 'not seen'}`);
console.log('slice   span | main run/wait | replan run/wait (nice) | other run/wait (threads) | what else began in the slice');
const inRange = router.filter((r) => r.at >= from && r.at <= to);
const notes = inRange.filter((r) => r.kind === 'sync' || r.kind === 'gc' || r.kind === 'stall' || r.kind === 'run' || r.kind === 'first-run');
const totals = {};
for (const s of inRange.filter((r) => r.kind === 'threads')) {
  const by = { main: [0, 0], replan: [0, 0, null], other: [0, 0, 0] };
  for (const t of s.threads) {
    const role = roleOf(t.tid);
    const b = by[role] ?? (by[role] = [0, 0, 0]);
    b[0] += t.run;
    b[1] += t.wait;
    if (role === 'replan') b[2] = t.nice;
    else if (role !== 'main') b[2]++;
    totals[role] = (totals[role] ?? 0) + t.run;
  }
  const here = notes.filter((r) => r.at >= s.at && r.at < s.at + s.span);
  const what = here.map((r) => (r.kind === 'sync' ? `${r.what}${r.thread ? '@w' : ''} ${r.ms}/${r.cpuMs}` : r.kind === 'gc' ? `gc${r.major ? '-major' : ''} ${r.ms}${r.thread ? '@w' : ''}` : r.kind === 'stall' ? `stall${r.thread ? '@w' : ''} ${r.ms}` : `ort-run ${r.ms}`)).join(', ');
  const f = (x) => x.toFixed(1).padStart(5);
  console.log(`${rel(s.at).padStart(5)} ${String(s.span).padStart(6)} | ${f(by.main[0])}/${f(by.main[1])} | ${f(by.replan[0])}/${f(by.replan[1])} (${by.replan[2] ?? '–'}) | ${f(by.other[0])}/${f(by.other[1])} (${by.other[2]}) | ${what}`);
}
console.log(`run time in the range, by thread (ms): ${Object.entries(totals).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
