// Summarises a bench:rebalance run made with --trace-dir: per 10 s of load, the router's heap used (MB, at the
// bin's end), its garbage collection (ms per s, all kinds and major mark-compacts), majors and scavenges per s,
// and, from the run's JSON, the p90 of the gaps between consecutive tokens of a stream and the tokens per s.
// Prints a table and writes JSON (the bins and the first-minute / third-minute comparison) to --out.
//   node bench/router-heap-summary.mjs --run run.json --trace-dir DIR [--label L] [--out summary.json]
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { run: { type: 'string' }, 'trace-dir': { type: 'string' }, label: { type: 'string' }, out: { type: 'string' }, bin: { type: 'string', default: '10' } } });
const run = JSON.parse(readFileSync(values.run, 'utf8'));
const dir = values['trace-dir'];
const BIN = Number(values.bin) * 1000;
const loadStartEpoch = run.eventTimes[0].atEpochMs - run.intervals[0].atMs;
const routerFile = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).find((f) => readFileSync(join(dir, f), 'utf8').split('\n', 1)[0].includes('serve'));
const heap = readFileSync(join(dir, routerFile), 'utf8').split('\n').filter((l) => l.includes('"kind":"heap"')).map((l) => JSON.parse(l));

const p = (xs, q) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] : null);
const gaps = [];
for (const s of run.streams) for (let i = 1; i < s.tokenMs.length; i++) gaps.push([s.tokenMs[i], s.tokenMs[i] - s.tokenMs[i - 1]]);
const tokens = run.streams.flatMap((s) => s.tokenMs);
const end = Math.max(...tokens);
const bins = [];
for (let t = 0; t + BIN <= end + 1; t += BIN) {
  const h = heap.filter((r) => r.at - loadStartEpoch >= t && r.at - loadStartEpoch < t + BIN);
  const secs = h.length || 1;
  const g = gaps.filter(([at]) => at >= t && at < t + BIN).map(([, d]) => d);
  bins.push({
    fromS: t / 1000,
    heapUsedMB: h.length ? Math.round(h.at(-1).used / 1e5) / 10 : null,
    gcMsPerS: Math.round(h.reduce((a, r) => a + r.gcMs, 0) / secs * 10) / 10,
    majorMsPerS: Math.round(h.reduce((a, r) => a + r.majorMs, 0) / secs * 10) / 10,
    majorsPerS: Math.round(h.reduce((a, r) => a + r.majors, 0) / secs * 10) / 10,
    scavengesPerS: Math.round(h.reduce((a, r) => a + (r.minors ?? 0), 0) / secs * 10) / 10,
    gapP50Ms: p(g, 0.5) === null ? null : Math.round(p(g, 0.5)),
    gapP90Ms: p(g, 0.9) === null ? null : Math.round(p(g, 0.9)),
    gapsOver150: g.filter((d) => d > 150).length,
    tokensPerS: Math.round(tokens.filter((x) => x >= t && x < t + BIN).length / (BIN / 1000) * 10) / 10,
  });
}
const minute = (from, to) => {
  const g = gaps.filter(([at]) => at >= from && at < to).map(([, d]) => d);
  const h = heap.filter((r) => r.at - loadStartEpoch >= from && r.at - loadStartEpoch < to);
  return { fromS: from / 1000, toS: to / 1000, gapP50Ms: Math.round(p(g, 0.5)), gapP90Ms: Math.round(p(g, 0.9)), gcMsPerS: Math.round(h.reduce((a, r) => a + r.gcMs, 0) / (h.length || 1) * 10) / 10, majorsPerS: Math.round(h.reduce((a, r) => a + r.majors, 0) / (h.length || 1) * 10) / 10 };
};
const summary = { label: values.label ?? run.label, run: values.run, loadSeconds: Math.round(end / 1000), firstMinute: minute(5000, 65000), from120s: minute(120000, Math.min(180000, end)), bins };
console.log(`${summary.label}: first minute ${JSON.stringify(summary.firstMinute)}\n  from 120 s ${JSON.stringify(summary.from120s)}`);
console.log('from s | heap MB | GC ms/s | major ms/s | majors/s | scavenges/s | gap p50 | gap p90 | gaps>150 | tok/s');
for (const b of bins) console.log([b.fromS, b.heapUsedMB, b.gcMsPerS, b.majorMsPerS, b.majorsPerS, b.scavengesPerS, b.gapP50Ms, b.gapP90Ms, b.gapsOver150, b.tokensPerS].join(' | '));
if (values.out) writeFileSync(values.out, `${JSON.stringify(summary, null, 1)}\n`);
