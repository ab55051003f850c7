/**
 * The cluster as separate machines would see it, on one 2-core box: the router (this process) pinned
 * to core 0, the expert shard(s) to core 1 (taskset), one onnxruntime thread each. Decode at batch 8,
 * 32 and 64 with overlap off (--micro-batches 1) and on (2), beside the in-process engine on one core
 * and on two. Per run: decode tok/s, the MoE layer's wall time (experts outstanding, as the router
 * sees it), the router's idle time waiting for shards (event-loop idle: onnxruntime runs on the loop's
 * thread, so the loop is idle only while nothing but shard answers can come), and the shards' idle
 * time (step wall time the shards did not spend computing). Ends with the OpenTelemetry trace of one
 * overlapped decode step, router and shard spans, as JSON and a text waterfall.
 * --expert-transports grpc,frames measures the pinned cluster once per transport (the shards serve both;
 * the trace is of the last); --in-process off leaves out the in-process runs.
 *   npm run bench:pinned [-- --model DIR] [--batches 8,32,64] [--shards 1] [--prompt 64] [--steps 16] [--expert-transports grpc] [--in-process on|off]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine, GREEDY, type MicroBatchCount } from '@expertmesh/engine';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { ForwardingExperts, type DispatchCall, type ExpertRouting, type RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { openExperts, shardChannel, type ExpertTransport } from '@expertmesh/router';
import { MAX_MESSAGE_BYTES } from '@expertmesh/wire';
import { startTracing } from '@expertmesh/telemetry';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { ensureBenchModel } from './bench-model.js';
import { runDecode } from './decode-run.js';
import { machineDescription } from './machine.js';
import { pinnedLayout, pinProcess } from './pin-cores.js';
import { TraceCollector, type CollectedSpan } from './trace-collector.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    batches: { type: 'string' },
    shards: { type: 'string' },
    prompt: { type: 'string' },
    steps: { type: 'string' },
    out: { type: 'string' },
    'weight-dtype': { type: 'string' },
    'expert-transports': { type: 'string' },
    'in-process': { type: 'string' },
  },
});
const transports = (values['expert-transports'] ?? 'grpc').split(',') as ExpertTransport[];
const inProcess = (values['in-process'] ?? 'on') !== 'off';
/** float32 by default, as the earlier cluster figures: bfloat16 held weights widen per run, which would dwarf everything else here. */
const weightDtype = (values['weight-dtype'] ?? 'float32') as 'auto' | 'float32';
const modelDir = await ensureBenchModel(values.model);
const batches = (values.batches ?? '8,32,64').split(',').map(Number);
const shardCount = Number(values.shards ?? 1);
const lengths = { promptTokens: Number(values.prompt ?? 64), decodeSteps: Number(values.steps ?? 16) };
const identity = await readCheckpointIdentity(modelDir);
const config = identity.config;
const maxBatch = Math.max(...batches);
const layout = pinnedLayout();
const date = new Date().toISOString();

/** The time at least one MoE layer call is outstanding, and how many calls overlap at most. */
class ExpertsTimeline extends ForwardingExperts {
  outstanding = 0;
  busySince = 0;
  outstandingMs = 0;
  layerCalls = 0;
  mostOutstanding = 0;

  override async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    if (this.outstanding++ === 0) this.busySince = performance.now();
    this.mostOutstanding = Math.max(this.mostOutstanding, this.outstanding);
    this.layerCalls++;
    try {
      return await this.inner.compute(layer, hidden, routing);
    } finally {
      if (--this.outstanding === 0) this.outstandingMs += performance.now() - this.busySince;
    }
  }

  reset(): void {
    this.outstandingMs = 0;
    this.layerCalls = 0;
    this.mostOutstanding = 0;
  }
}

interface Row {
  readonly setup: string;
  readonly microBatches: MicroBatchCount;
  readonly batch: number;
  readonly decodeTokensPerSecond: number;
  readonly decodeStepMs: number;
  /** Per step and MoE layer: wall time with at least one of the layer's expert calls outstanding. */
  readonly moeLayerMs: number;
  readonly routerIdlePct: number;
  readonly shardIdlePct: number | null;
  readonly shardComputeMsPerStep: number | null;
  readonly callsInFlightMax: number;
}

const rows: Row[] = [];
const moeLayers = config.moeLayers.length;

async function measure(setup: string, experts: RoutedExpertsBackend, execution: ExecutionOptions, microBatchCounts: readonly MicroBatchCount[]): Promise<Engine> {
  const timeline = new ExpertsTimeline(experts);
  const calls: DispatchCall[] = [];
  timeline.observe({ onCall: (c) => calls.push(c) });
  const engine = await Engine.load(modelDir, { experts: timeline, execution, weightDtype, sharedExperts: setup.startsWith('in-process') ? 'in-layer' : 'beside-routed', kvCacheTokens: maxBatch * (lengths.promptTokens + lengths.decodeSteps + 24), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
  for (const batch of batches) {
    for (const microBatches of microBatchCounts) {
      engine.microBatches = microBatches;
      let elu = performance.eventLoopUtilization();
      let shardMs = 0;
      let idle = { idle: 0, active: 0 };
      const run = await runDecode(
        engine,
        batch,
        batch,
        () => {
          timeline.reset();
          calls.length = 0;
          elu = performance.eventLoopUtilization();
        },
        lengths,
        () => {
          idle = performance.eventLoopUtilization(elu);
          shardMs = calls.reduce((a, c) => a + c.computeMicros / 1000, 0);
        },
      );
      const wallMs = run.decodeStepMs * lengths.decodeSteps;
      const remote = calls.length > 0;
      const row: Row = {
        setup,
        microBatches,
        batch,
        decodeTokensPerSecond: run.decodeTokensPerSecond,
        decodeStepMs: run.decodeStepMs,
        moeLayerMs: timeline.outstandingMs / (lengths.decodeSteps * moeLayers),
        routerIdlePct: (100 * idle.idle) / (idle.idle + idle.active),
        shardIdlePct: remote ? Math.max(0, 100 * (1 - shardMs / shardCount / wallMs)) : null,
        shardComputeMsPerStep: remote ? shardMs / lengths.decodeSteps : null,
        callsInFlightMax: timeline.mostOutstanding,
      };
      rows.push(row);
      console.error(JSON.stringify(row));
    }
  }
  return engine;
}

const collector = await TraceCollector.start();
let cluster: LocalCluster | null = null;
let trace: CollectedSpan[] = [];
try {
  // 1. In-process on both cores (the colocated baseline), before this process is pinned.
  pinProcess(process.pid, layout.all);
  if (inProcess) await (await measure('in-process, 2 cores', await openExperts({ kind: 'in-process' }, { ...identity, modelDir }, { executionProvider: 'cpu', intraOpThreads: 2 }, undefined, weightDtype), { executionProvider: 'cpu', intraOpThreads: 2 }, [1])).close();
  // 2. In-process on one core.
  pinProcess(process.pid, layout.router);
  const oneCore: ExecutionOptions = { executionProvider: 'cpu', intraOpThreads: 1 };
  if (inProcess) await (await measure('in-process, 1 core', await openExperts({ kind: 'in-process' }, { ...identity, modelDir }, oneCore, undefined, weightDtype), oneCore, [1, 2])).close();
  // 3. Router on core 0, shards on core 1. Shards trace only what a traced router call asks for.
  cluster = await LocalCluster.start({
    modelDir,
    shards: shardCount,
    nRoutedExperts: config.nRoutedExperts,
    shardArgs: ['--intra-op-threads', '1', '--weight-dtype', weightDtype, '--frames-listen', '127.0.0.1:0'],
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_TRACES_SAMPLER: 'parentbased_always_off' },
  });
  for (const s of cluster.shards) pinProcess(s.process.pid!, layout.shards);
  let engine: Engine | null = null;
  for (const transport of transports) {
    await engine?.close();
    const remote = await openExperts({ kind: 'shards', addresses: cluster.addresses }, { ...identity, modelDir }, oneCore, { wireDtype: 'bfloat16', combineDtype: 'bfloat16', channel: shardChannel(null, MAX_MESSAGE_BYTES, transport) });
    const transportLabel = transports.length > 1 || transport !== 'grpc' ? `, ${transport}` : '';
    engine = await measure(`pinned: router core 0, ${shardCount} shard${shardCount > 1 ? 's' : ''} core 1${transportLabel}`, remote, oneCore, [1, 2]);
  }
  if (!engine) throw new Error('--expert-transports names no transport');
  // 4. One overlapped decode step at batch 32, traced on the router and the shards.
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = collector.endpoint;
  process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json';
  const tracing = startTracing('router');
  engine.microBatches = 2;
  const traced = Array.from({ length: 32 }, (_, i) => engine.submit({ promptTokenIds: Array.from({ length: 16 }, (_, j) => (i * 31 + j * 7) % config.vocabSize), maxTokens: 2, sampling: GREEDY, ignoreEos: true }));
  while (traced.some((s) => s.outputTokenIds.length === 0)) await engine.step();
  await engine.step(); // the traced decode step
  await engine.close();
  await tracing.shutdown();
  await cluster.stop();
  cluster = null;
  trace = decodeStepTrace(collector.spans);
} finally {
  await cluster?.stop();
  await collector.close();
}

/** The spans of the last decode step (no prefill tokens), with times relative to its start and each span's micro-batch. */
function decodeStepTrace(spans: readonly CollectedSpan[]): CollectedSpan[] {
  const step = spans.filter((s) => s.name === 'expertmesh.engine.step' && s.attributes['expertmesh.prefill_tokens'] === 0).sort((a, b) => b.startMs - a.startMs)[0];
  if (!step) throw new Error('the traced decode step was not collected');
  const inTrace = spans.filter((s) => s.traceId === step.traceId);
  const byId = new Map(inTrace.map((s) => [s.spanId, s]));
  const microBatchOf = (s: CollectedSpan): unknown => {
    for (let p: CollectedSpan | undefined = s; p; p = byId.get(p.parentSpanId)) if (p.name === 'expertmesh.model.micro_batch') return p.attributes['expertmesh.micro_batch'];
    return null;
  };
  return inTrace
    .map((s) => ({ ...s, startMs: s.startMs - step.startMs, endMs: s.endMs - step.startMs, attributes: { ...s.attributes, micro_batch: microBatchOf(s) } }))
    .sort((a, b) => a.startMs - b.startMs);
}

const report = { date, machine: machineDescription(), model: 'bench preset', weightDtype, lengths, shards: shardCount, rows, trace };
const out = values.out ?? join('bench', 'results', `pinned-cluster-${date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);

const pct = (x: number | null): string => (x === null ? '–' : `${x.toFixed(0)} %`);
console.log('| setup | micro-batches | batch | decode tok/s | step ms | MoE layer ms | router idle (waiting for shards) | shards idle (waiting for router) | shard compute ms/step |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.setup} | ${r.microBatches} | ${r.batch} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeStepMs.toFixed(1)} | ${r.moeLayerMs.toFixed(2)} | ${pct(r.routerIdlePct)} | ${pct(r.shardIdlePct)} | ${r.shardComputeMsPerStep?.toFixed(1) ?? '–'} |`,
  );
}
for (const setup of new Set(rows.filter((r) => r.setup.startsWith('pinned')).map((r) => r.setup))) {
  const pinned = rows.filter((r) => r.setup === setup);
  for (const batch of batches) {
    const off = pinned.find((r) => r.batch === batch && r.microBatches === 1);
    const on = pinned.find((r) => r.batch === batch && r.microBatches === 2);
    const colocated = rows.find((r) => r.setup === 'in-process, 2 cores' && r.batch === batch);
    if (off && on) console.log(`${setup}, batch ${batch}: overlap on/off ${(on.decodeTokensPerSecond / off.decodeTokensPerSecond).toFixed(2)}x${colocated ? `; pinned+overlap vs in-process on 2 cores ${(on.decodeTokensPerSecond / colocated.decodeTokensPerSecond).toFixed(2)}x` : ''}`);
  }
}

// The traced step as a waterfall: one line per span, a bar over the step's duration.
const shown = trace.filter((s) => ['expertmesh.model.micro_batch', 'expertmesh.model.attention', 'expertmesh.moe.dispatch', 'expertmesh.shard.expert_compute'].includes(s.name));
const total = Math.max(...trace.map((s) => s.endMs));
const width = 72;
console.log(`\ntraced decode step (batch 32, 2 micro-batches): ${total.toFixed(1)} ms`);
for (const s of shown) {
  const a = Math.round((s.startMs / total) * width);
  const b = Math.max(a + 1, Math.round((s.endMs / total) * width));
  const label = `${s.service === 'expertmesh-router' ? 'router' : 'shard '} mb${String(s.attributes.micro_batch ?? '?')} ${s.name.replace('expertmesh.', '').padEnd(21)} L${String(s.attributes['expertmesh.layer'] ?? '-')}`;
  console.log(`${label.padEnd(44)} ${' '.repeat(a)}${'█'.repeat(b - a)}`);
}
