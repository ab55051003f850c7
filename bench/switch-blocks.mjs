// What a process's main thread did while its event loop was blocked, from a bench:rebalance --trace-dir run with
// --cpu-profile-seconds: for each main-thread stall (bench/switch-trace.mjs's `stall` records, a 5 ms timer late by
// over 15 ms) in a time range, the CPU profile's samples in it, summed by their JavaScript stack (innermost frames)
// and by the outermost project frame under the event loop (what the turn ran). Times relative to an epoch-ms origin
// (e.g. the JSON's eventTimes[…].switchedEpochMs, or when the bench saw the plan).
//   node bench/switch-blocks.mjs TRACE_DIR --from EPOCH_MS --to EPOCH_MS [--origin EPOCH_MS] [--min-ms 2] [--depth 6]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { from: { type: 'string' }, to: { type: 'string' }, origin: { type: 'string' }, 'min-ms': { type: 'string', default: '2' }, depth: { type: 'string', default: '6' }, 'stall-ms': { type: 'string', default: '15' } },
});
const dir = positionals[0];
if (!dir || !values.from || !values.to) throw new Error('usage: node bench/switch-blocks.mjs TRACE_DIR --from EPOCH_MS --to EPOCH_MS [--origin EPOCH_MS]');
const from = Number(values.from);
const to = Number(values.to);
const origin = Number(values.origin ?? values.from);
const minMs = Number(values['min-ms']);
const depth = Number(values.depth);
const rel = (t) => `${t - origin >= 0 ? '+' : ''}${Math.round(t - origin)}`;

/** A frame's short name: function and file (no directories). */
const frameName = (f) => `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').slice(-2).join('/') : ''}:${f.lineNumber + 1}`.trim();
const isProject = (f) => /\/(services|packages)\/[^/]+\/src\//.test(f.url) || /\/dist\//.test(f.url);

for (const file of readdirSync(dir).filter((f) => /^\d+\.jsonl$/.test(f))) {
  const pid = file.replace('.jsonl', '');
  const lines = readFileSync(join(dir, file), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const start = lines.find((r) => r.kind === 'start' && r.thread === 0);
  const profiled = lines.find((r) => r.kind === 'profile' && r.thread === 0);
  const stalls = lines.filter((r) => r.kind === 'stall' && r.thread === 0 && r.at + r.ms >= from && r.at <= to && r.ms >= Number(values['stall-ms']));
  let profile = null;
  try {
    profile = JSON.parse(readFileSync(join(dir, `${pid}.cpuprofile`), 'utf8'));
  } catch {
    // no profile for this process
  }
  console.log(`\n== pid ${pid} (${start?.argv ?? '?'}): ${stalls.length} stalls in range${profile ? '' : ' (no CPU profile)'}`);
  if (!profile || !profiled) {
    for (const s of stalls) console.log(`  stall ${rel(s.at)} ms, ${s.ms} ms`);
    continue;
  }
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stackOf = (id) => {
    const out = [];
    for (let at = id; at !== undefined; at = parent.get(at)) out.push(nodes.get(at).callFrame);
    return out; // innermost first
  };
  // Sample times in epoch ms: the profile starts when the 'profile' record was written (within a ms).
  const times = [];
  let t = profile.startTime;
  for (const d of profile.timeDeltas) times.push(profiled.at + ((t += d) - profile.startTime) / 1000);
  for (const s of stalls) {
    // The block: from the timer's due time (less its 5 ms period) to when it fired.
    const a = s.at - 5;
    const b = s.at + s.ms;
    const byStack = new Map();
    const byTurn = new Map();
    let total = 0;
    for (let i = 0; i < profile.samples.length; i++) {
      if (times[i] < a || times[i] > b) continue;
      const dt = (i + 1 < times.length ? times[i + 1] - times[i] : 0.5);
      const stack = stackOf(profile.samples[i]);
      const top = stack[0];
      if (top.functionName === '(idle)') continue;
      total += dt;
      const key = stack.slice(0, depth).map(frameName).join(' < ');
      byStack.set(key, (byStack.get(key) ?? 0) + dt);
      const outer = [...stack].reverse().find(isProject);
      const turn = outer ? frameName(outer) : frameName(stack.at(-2) ?? top);
      byTurn.set(turn, (byTurn.get(turn) ?? 0) + dt);
    }
    console.log(`  stall at ${rel(s.at)} ms: ${s.ms} ms late; ${total.toFixed(1)} ms of samples`);
    for (const [k, ms] of [...byTurn].sort((x, y) => y[1] - x[1]).filter(([, ms]) => ms >= minMs)) console.log(`    turn ${ms.toFixed(1)} ms  ${k}`);
    for (const [k, ms] of [...byStack].sort((x, y) => y[1] - x[1]).filter(([, ms]) => ms >= minMs)) console.log(`      ${ms.toFixed(1)} ms  ${k}`);
  }
}
