/**
 * Where a decode step's time goes, in the engine, beside the routed experts: each graph's runs
 * (embedding, the layer graphs, the LM head; and, counted with them by name, the layers' own FFNs where they run on
 * the native kernel: `layerN_mlp`, `layerN_shared_experts`, and their gate and routing, `layerN_gate`), the routed
 * experts' calls, the model's JavaScript
 * between the runs (inputs, the attention plan, cache writes) and the engine's (scheduler, sampling).
 * With the routed experts on the native kernel, also the kernel's own timers (its calls' parts and its thread
 * pool's hand-offs: how late the worker took a phase's first task, how long the caller waited at the join).
 * Run the process with --cpu-prof for the JavaScript's own functions.
 *   node --import tsx bench/decode-step-anatomy.ts [--model DIR] [--weight-dtype float32|int8] [--batches 1,8,32] [--expert-kernel auto|native] [--out FILE]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { Engine } from '@expertmesh/engine';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { WEIGHT_DTYPES, WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION, EXPERT_KERNELS, Graph, type ExpertKernel } from '@expertmesh/tensor-ops';
import { readKernelProfile, setKernelProfiling, type KernelRunProfile } from '@expertmesh/expert-kernel';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { NativeFfn, NativeRouter } from '@expertmesh/model';
import { ensureBenchModel } from './bench-model.js';
import { CountingExperts } from './counting-experts.js';
import { DECODE_STEPS, runDecode } from './decode-run.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' }, batches: { type: 'string', default: '1,8,32' }, 'weight-dtype': { type: 'string', default: 'float32' }, 'expert-kernel': { type: 'string', default: 'auto' } } });
const weightDtype = values['weight-dtype'] as WeightDtype;
if (!WEIGHT_DTYPES.includes(weightDtype)) throw new Error(`--weight-dtype must be one of ${WEIGHT_DTYPES.join(', ')}`);
if (!(EXPERT_KERNELS as readonly string[]).includes(values['expert-kernel'])) throw new Error(`--expert-kernel must be one of ${EXPERT_KERNELS.join(', ')}`);
const modelDir = await ensureBenchModel(values.model);
const batches = values.batches.split(',').map(Number);

// Every graph's runs, timed by name; with them the layers' own FFNs and routers on the native kernel (synchronous calls).
const graphMs = new Map<string, { ms: number; runs: number }>();
function record(name: string, t0: number): void {
  const e = graphMs.get(name) ?? { ms: 0, runs: 0 };
  e.ms += performance.now() - t0;
  e.runs++;
  graphMs.set(name, e);
}
const run = Graph.prototype.run;
Graph.prototype.run = async function (this: Graph, feeds) {
  const t0 = performance.now();
  try {
    return await run.call(this, feeds);
  } finally {
    record(this.name, t0);
  }
};
function timedCall<R>(name: string, call: () => R): R {
  const t0 = performance.now();
  try {
    return call();
  } finally {
    record(name, t0);
  }
}
const ffnRun = NativeFfn.prototype.run;
NativeFfn.prototype.run = function (this: NativeFfn, hn, rows) {
  return timedCall(this.name, () => ffnRun.call(this, hn, rows));
};
const route = NativeRouter.prototype.route;
NativeRouter.prototype.route = function (this: NativeRouter, hn, T) {
  return timedCall(this.name, () => route.call(this, hn, T));
};
const config = await loadModelConfig(modelDir);
const checkpoint = await SafetensorsCheckpoint.open(modelDir);
const local = await LocalRoutedExperts.load(config, new WeightReader(checkpoint, config, weightDtype), { ...DEFAULT_EXECUTION, expertKernel: 'auto' });
const experts = new CountingExperts(local);
const maxBatch = Math.max(...batches);
// `native` also puts the layers' own int8/int4 FFNs and gates on the kernel (`auto` keeps them in the graphs).
const engine = await Engine.load(modelDir, { experts, weightDtype, execution: { ...DEFAULT_EXECUTION, expertKernel: values['expert-kernel'] as ExpertKernel }, kvCacheTokens: maxBatch * (128 + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });

// The model's forward and the engine's step, timed around the graphs.
const model = engine.model as unknown as { forwardMicroBatches: (...a: unknown[]) => Promise<unknown> };
const forward = model.forwardMicroBatches.bind(model);
let forwardMs = 0;
model.forwardMicroBatches = async (...a: unknown[]) => {
  const t0 = performance.now();
  try {
    return await forward(...a);
  } finally {
    forwardMs += performance.now() - t0;
  }
};

const rows = [];
for (const batch of batches) {
  let stepMs = 0;
  const step = engine.step.bind(engine);
  let faults = 0;
  // What the timed decode steps did, read when they end (the drain steps after them are not counted).
  let timed = { graphs: new Map<string, { ms: number; runs: number }>(), forwardMs: 0, expertMs: 0, faults: 0, kernel: null as KernelRunProfile | null };
  const native = local.expertKernel === 'native';
  const result = await runDecode(
    engine,
    batch,
    batch,
    () => {
      graphMs.clear();
      experts.reset();
      forwardMs = 0;
      faults = process.resourceUsage().minorPageFault;
      if (native) setKernelProfiling(true);
      engine.step = async () => {
        const t0 = performance.now();
        try {
          return await step();
        } finally {
          stepMs += performance.now() - t0;
        }
      };
    },
    undefined,
    () => {
      engine.step = step;
      const kernel = native ? readKernelProfile() : null;
      if (native) setKernelProfiling(false);
      timed = { graphs: new Map([...graphMs].map(([k, v]) => [k, { ...v }])), forwardMs, expertMs: experts.layerMs, faults: process.resourceUsage().minorPageFault - faults, kernel };
    },
  );
  const per = (ms: number): number => ms / DECODE_STEPS;
  const graphs = Object.fromEntries([...timed.graphs].map(([name, e]) => [name, { msPerStep: per(e.ms), runsPerStep: e.runs / DECODE_STEPS }]));
  const graphTotal = [...timed.graphs.values()].reduce((a, e) => a + e.ms, 0);
  const row = {
    batch,
    decodeTokensPerSecond: result.decodeTokensPerSecond,
    stepMs: per(stepMs),
    forwardMs: per(timed.forwardMs),
    graphsMs: per(graphTotal),
    routedExpertsMs: per(timed.expertMs),
    modelJsMs: per(timed.forwardMs - graphTotal - timed.expertMs),
    engineJsMs: per(stepMs - timed.forwardMs),
    minorPageFaultsPerStep: timed.faults / DECODE_STEPS,
    // The native expert runs by part, ms per step; the pool's hand-offs per phase.
    nativeExperts: timed.kernel && {
      callsPerStep: timed.kernel.calls / DECODE_STEPS,
      callMs: per(timed.kernel.callNs / 1e6),
      quantizeMs: per((timed.kernel.quantizeXNs + timed.kernel.quantizeHNs) / 1e6),
      gateUpMs: per(timed.kernel.gateUpNs / 1e6),
      downMs: per(timed.kernel.downNs / 1e6),
      wakeMsPerPhase: timed.kernel.wakeNs / timed.kernel.phases / 1e6,
      joinWaitMsPerPhase: timed.kernel.joinWaitNs / timed.kernel.phases / 1e6,
      phasesWithoutWorker: timed.kernel.phasesWithoutWorker / timed.kernel.phases,
      workerTaskShare: timed.kernel.workerTasks / (timed.kernel.workerTasks + timed.kernel.mainTasks),
    },
    graphs,
  };
  rows.push(row);
  console.log(JSON.stringify(row));
}
await engine.close();
await checkpoint.close();
const out = values.out ?? join('bench', 'results', `decode-step-anatomy-${weightDtype}-${new Date().toISOString().slice(0, 10)}.json`);
await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), weightDtype, rows }, null, 2)}\n`);
