/**
 * Where one shard call's time goes, stage by stage, on both ends: the setup of bench:call-overhead
 * (router = this process on core 0, one shard holding every expert on core 1, float32 weights, one
 * onnxruntime thread), with bench/stream-timestamps.ts loaded into both processes. Their CLOCK_MONOTONIC
 * timestamps line up, so each call splits into: router (grpc-js serialize and hand-off to HTTP/2, DATA
 * chunks in, grpc-js decode), wire (HTTP/2 out on one side to the first chunk in on the other: kernel,
 * wake-up, nghttp2), shard (chunks in, grpc-js decode, its work outside the reported compute, serialize).
 * Medians per stage; calls one at a time with a 5 ms pause between them (so neither side is busy).
 *   node --import tsx bench/call-anatomy.ts [--model DIR] [--calls 30] [--batches 1,32] [--out FILE]
 */
import { streamEvents, type StreamEvent, type StreamEventKind } from './stream-timestamps.js';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall, ExpertRouting } from '@expertmesh/routed-experts';
import { connectToShards } from '@expertmesh/router';
import type { WireDtype } from '@expertmesh/wire';
import { ensureBenchModel } from './bench-model.js';
import { machineDescription } from './machine.js';
import { randomRouting, seededRandom } from './random-routing.js';
import { pinnedLayout, pinProcess } from './pin-cores.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, calls: { type: 'string' }, batches: { type: 'string' }, out: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);
const callsPerCase = Number(values.calls ?? 30);
const batches = (values.batches ?? '1,32').split(',').map(Number);
const identity = await readCheckpointIdentity(modelDir);
const config = identity.config;
const layout = pinnedLayout();
pinProcess(process.pid, layout.router);

const shardEventsFile = join(process.cwd(), '.tmp', `call-anatomy-shard-${process.pid}.json`);
await mkdir(join(shardEventsFile, '..'), { recursive: true });
const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const probe = pathToFileURL(join(import.meta.dirname, 'stream-timestamps.ts')).href;
const cluster = await LocalCluster.start({
  modelDir,
  shards: 1,
  nRoutedExperts: config.nRoutedExperts,
  shardArgs: ['--intra-op-threads', '1', '--weight-dtype', 'float32'],
  env: { NODE_OPTIONS: `--import=${tsx} --import=${probe}`, STREAM_TIMESTAMPS_OUT: shardEventsFile },
});
for (const s of cluster.shards) pinProcess(s.process.pid!, layout.shards);

const random = seededRandom(1);
const routing = (tokens: number): ExpertRouting => randomRouting(random, tokens, config.numExpertsPerTok, config.nRoutedExperts);

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
interface Mark {
  readonly wire: WireDtype;
  readonly batch: number;
  readonly start: number;
  readonly end: number;
  readonly call: DispatchCall;
}
const marks: Mark[] = [];
try {
  for (const wire of ['bfloat16', 'fp8'] as WireDtype[]) {
    const experts = await connectToShards(cluster.addresses, identity, { wireDtype: wire, combineDtype: 'bfloat16' });
    let last: DispatchCall | null = null;
    experts.observe({ onCall: (c) => (last = c) });
    for (const batch of batches) {
      const hidden = Float32Array.from({ length: batch * config.hiddenSize }, () => random() * 2 - 1);
      const r = routing(batch);
      const layer = config.moeLayers[0]!;
      for (let i = 0; i < 5; i++) await experts.compute(layer, hidden, r); // warm-up
      for (let i = 0; i < callsPerCase; i++) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        const start = now();
        await experts.compute(layer, hidden, r);
        marks.push({ wire, batch, start, end: now(), call: last! });
      }
    }
    await experts.close();
  }
} finally {
  await cluster.stop();
}

const shardEvents = JSON.parse(readFileSync(shardEventsFile, 'utf8')) as StreamEvent[];
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const within = (events: readonly StreamEvent[], m: Mark): StreamEvent[] => events.filter((e) => e[1] >= m.start && e[1] <= m.end);
const first = (events: readonly StreamEvent[], k: StreamEventKind): number => events.find((e) => e[0] === k)?.[1] ?? NaN;
const last = (events: readonly StreamEvent[], k: StreamEventKind): number => events.findLast((e) => e[0] === k)?.[1] ?? NaN;

/** Stages of one call, in order; those marked inRoundTrip add up (with the shard's compute) to the round trip. */
function stages(m: Mark): Record<string, number> {
  const r = within(streamEvents, m);
  const s = within(shardEvents, m);
  const compute = m.call.computeMicros / 1000;
  return {
    'router: gather, encode, plan (before the round trip)': first(r, 'msgout') - m.start,
    'router: grpc-js serialize, hand-off to HTTP/2': first(r, 'h2out') - first(r, 'msgout'),
    'wire in: router HTTP/2 write to first chunk at the shard': first(s, 'h2in') - first(r, 'h2out'),
    'shard: HTTP/2 chunks in (first to last)': last(s, 'h2in') - first(s, 'h2in'),
    'shard: grpc-js decode to handler': first(s, 'msgin') - last(s, 'h2in'),
    'shard: its own work outside the reported compute': first(s, 'msgout') - first(s, 'msgin') - compute,
    'shard: reported compute (experts, incl. onnxruntime feeds and the sum)': compute,
    'shard: of which onnxruntime run calls (first call to last result)': last(s, 'ort1') - first(s, 'ort0'),
    'shard: grpc-js serialize, hand-off to HTTP/2': first(s, 'h2out') - first(s, 'msgout'),
    'wire out: shard HTTP/2 write to first chunk at the router': first(r, 'h2in') - first(s, 'h2out'),
    'router: HTTP/2 chunks in (first to last)': last(r, 'h2in') - first(r, 'h2in'),
    'router: grpc-js decode to the answer': first(r, 'msgin') - last(r, 'h2in'),
    'router: decode, check, combine (after the round trip)': m.end - first(r, 'msgin'),
    'round trip': m.call.roundTripMs,
    'overhead (round trip minus compute)': m.call.roundTripMs - compute,
    'HTTP/2 chunks per request': s.filter((e) => e[0] === 'h2in').length,
    'HTTP/2 chunks per answer': r.filter((e) => e[0] === 'h2in').length,
  };
}

const cases = [...new Set(marks.map((m) => `${m.wire} ${m.batch}`))].map((key) => {
  const rows = marks.filter((m) => `${m.wire} ${m.batch}` === key).map(stages);
  const medians = Object.fromEntries(Object.keys(rows[0]!).map((k) => [k, median(rows.map((r) => r[k]!))]));
  return { wire: key.split(' ')[0]!, batch: Number(key.split(' ')[1]), calls: rows.length, medians };
});
const report = { date: new Date().toISOString(), machine: machineDescription(), pinned: 'router core 0, one shard core 1, --intra-op-threads 1, float32 weights', cases };
const out = values.out ?? join('bench', 'results', `call-anatomy-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`| stage (median ms) | ${cases.map((c) => `${c.wire} b${c.batch}`).join(' | ')} |`);
console.log(`|---|${cases.map(() => '---').join('|')}|`);
for (const k of Object.keys(cases[0]!.medians)) console.log(`| ${k} | ${cases.map((c) => c.medians[k]!.toFixed(k.startsWith('HTTP/2') ? 0 : 3)).join(' | ')} |`);
