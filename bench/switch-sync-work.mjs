// The synchronous slices of a bench:rebalance --trace-dir run (bench/switch-trace.mjs's `sync` records, from the code's
// timedSync, and its `gc`, `create` and `stall` records), per process, in windows around each event: where the bench saw
// the new plan ("arrival": from 150 ms before to 300 ms after) and where the switch ended ("hand-over": 400 ms before
// to 200 ms after). Prints each process's longest slices there and the slices summed by name.
//   node bench/switch-sync-work.mjs TRACE_DIR RESULT_JSON [--min-ms 1] [--event rebalance]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'min-ms': { type: 'string', default: '1' }, event: { type: 'string', default: '' }, json: { type: 'boolean', default: false } } });
const [dir, resultFile] = positionals;
if (!dir || !resultFile) throw new Error('usage: node bench/switch-sync-work.mjs TRACE_DIR RESULT_JSON [--min-ms 1] [--event rebalance]');
const minMs = Number(values['min-ms']);
const result = JSON.parse(readFileSync(resultFile, 'utf8'));
const events = result.eventTimes.filter((e) => !e.event.startsWith('null') && e.event.includes(values.event));
const procs = readdirSync(dir)
  .filter((f) => /^\d+\.jsonl$/.test(f))
  .map((f) => {
    const records = readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const start = records.find((r) => r.kind === 'start');
    return { pid: f.replace('.jsonl', ''), role: start?.argv?.startsWith('serve') ? 'router' : 'shard', records };
  });
const summary = [];
for (const e of events) {
  for (const [phase, from, to, origin] of [
    ['arrival', e.atEpochMs - 150, e.atEpochMs + 300, e.atEpochMs],
    ['hand-over', e.switchedEpochMs - 400, e.switchedEpochMs + 200, e.switchedEpochMs],
  ]) {
    console.log(`\n### ${e.event}: ${phase} (ms relative to ${phase === 'arrival' ? 'the bench seeing the plan' : 'the switch seen complete'})`);
    for (const p of procs) {
      const main = p.records.filter((r) => (r.thread ?? 0) === 0 && r.at >= from && r.at <= to);
      const slices = main.filter((r) => (r.kind === 'sync' || r.kind === 'gc' || r.kind === 'create') && r.ms >= minMs);
      const stalls = main.filter((r) => r.kind === 'stall');
      if (slices.length === 0 && stalls.length === 0) continue;
      const name = (r) => (r.kind === 'sync' ? r.what : r.kind === 'gc' ? (r.major ? 'gc-major' : 'gc-minor') : 'onnxruntime-session-create');
      console.log(`  ${p.role} ${p.pid}: stalls ${stalls.map((s) => `${Math.round(s.at - origin)}/${s.ms}`).join(' ') || 'none'}`);
      for (const r of slices.sort((a, b) => a.at - b.at)) console.log(`    ${String(Math.round(r.at - origin)).padStart(5)} ms  ${name(r).padEnd(28)} ${r.ms.toFixed(1).padStart(6)} ms${r.cpuMs !== undefined ? ` (cpu ${r.cpuMs.toFixed(1)})` : ''}`);
      const longest = slices.filter((r) => r.kind === 'sync' || r.kind === 'gc').reduce((m, r) => (r.ms > (m?.ms ?? -1) ? r : m), null);
      summary.push({ event: e.event, phase, pid: p.pid, role: p.role, longestStallMs: Math.max(0, ...stalls.map((s) => s.ms)), longestSlice: longest ? { what: name(longest), ms: longest.ms } : null });
    }
  }
}
if (values.json) console.log(JSON.stringify(summary));
