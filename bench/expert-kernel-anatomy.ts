/**
 * The native expert kernel in the memory-bound regime, one MoE layer at the `bench` preset's widths (hidden 1024,
 * 64 experts of width 512, top-8), synthetic weights:
 *  - the achievable rate: the chosen experts' very weight bytes (codes and scales, or float32 values) streamed once
 *    with the least work per byte (one vpdpbusd per 64 bytes), on 1 and 2 threads (streamProbe in the addon);
 *  - a layer call (LocalRoutedExperts.computePairs, the engine's path) split into its parts by the addon's timers:
 *    the boundary's checks, quantising the input, gate/up (with SiLU), quantising h, down, the pool's hand-offs
 *    (how late the worker took its first task, how long the caller waited at the join), and JavaScript around it.
 * Each is measured in three cache states: "warm" (calls back to back: the experts' bytes partly in the caches, the
 * pool's worker spinning), "idle" (the same after 2 ms of the calling thread alone: the worker asleep, as between
 * MoE layers in the engine) and "cold" (384 MiB read between calls: the weights come from DRAM and the worker
 * sleeps, as in a decode step, where the layer graphs and the other layers' experts pass in between).
 * Layer times are the median call (this machine is shared: means move with other work); the parts are means.
 *   node --import tsx bench/expert-kernel-anatomy.ts [--formats int8,int4,float32] [--batches 1,8] [--rates false] [--label NAME] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { LocalRoutedExperts } from '@expertmesh/local-experts';
import { NativeExpertProgram, readKernelProfile, setKernelProfiling, type KernelRunProfile } from '@expertmesh/expert-kernel';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { measureMachineRates } from './machine-rates.js';
import { randomPairs, seeded, syntheticExperts, type Format } from './synthetic-experts.js';

const { values } = parseArgs({ options: { formats: { type: 'string', default: 'int8,int4,float32' }, batches: { type: 'string', default: '1,8' }, rates: { type: 'string', default: 'true' }, label: { type: 'string', default: '' }, out: { type: 'string' } } });
const formats = values.formats.split(',') as Format[];
const batches = values.batches.split(',').map(Number);
const ROUTINGS = 16;
const LAYER = 1;
const STATES = ['warm', 'idle', 'cold'] as const;
type CacheState = (typeof STATES)[number];

// Two equal 192 MiB buffers: comparing them reads both (memcmp), evicting the caches without dirtying them.
const evictA = Buffer.alloc(192 * 2 ** 20, 1);
const evictB = Buffer.alloc(192 * 2 ** 20, 1);
/** Puts the machine in `state` before a measured call (not timed). */
function prepare(state: CacheState): void {
  if (state === 'cold') Buffer.compare(evictA, evictB);
  else if (state === 'idle') for (const end = performance.now() + 2; performance.now() < end; );
}

const rates = values.rates === 'false' ? null : await measureMachineRates();
console.error('machine', rates);
const preset = getPreset('bench').config;
const config = parseModelConfig(preset);
const H = config.hiddenSize;
const all = Array.from({ length: config.nRoutedExperts }, (_, e) => e);
const execution = { ...DEFAULT_EXECUTION, expertKernel: 'native' as const };
const probes: Record<string, unknown>[] = [];
const calls: Record<string, unknown>[] = [];

for (const format of formats) {
  const source = syntheticExperts(config, format);
  // The probe's program holds the layer's experts as LocalRoutedExperts would (same arrays, same layout).
  const weights = await Promise.all(all.map((e) => source.routedExpert(LAYER, e)));
  const program = NativeExpertProgram.create(`probe-${format}`, weights, { threads: execution.intraOpThreads });
  const layer = await LocalRoutedExperts.load(config, source, execution, (l) => (l === LAYER ? all : []));
  const routings = (batch: number) => Array.from({ length: ROUTINGS }, (_, i) => ({ pairs: randomPairs(batch, config.numExpertsPerTok, all, 100 * batch + i), x: seeded(batch * H, 7 + i) }));

  // The achievable rate over the 8 experts one token chooses.
  for (const state of STATES) {
    for (const threads of [1, 2]) {
      const each: { ns: number; bytes: number }[] = [];
      for (let round = 0; round < 3; round++) {
        for (const { pairs } of routings(1)) {
          const chosen = [...new Set(pairs.expertIds)];
          if (state === 'warm') program.streamProbe(chosen, threads);
          prepare(state);
          const r = program.streamProbe(chosen, threads);
          if (round > 0) each.push(r);
        }
      }
      const median = each.sort((a, b) => a.bytes / a.ns - b.bytes / b.ns)[each.length >> 1]!;
      const row = { format, state, threads, mbPerCall: median.bytes / 1e6, gbPerSecond: median.bytes / median.ns, msPerCall: median.ns / 1e6 };
      probes.push(row);
      console.error(JSON.stringify(row));
    }
  }

  // Layer calls, timed whole in JavaScript and by part in the addon.
  for (const batch of batches) {
    const cases = routings(batch);
    for (const state of STATES) {
      for (const c of cases) await layer.computePairs(LAYER, c.x, batch, c.pairs);
      let jsNs = 0;
      const each: number[] = [];
      setKernelProfiling(true);
      for (let round = 0; round < 3; round++) {
        for (const c of cases) {
          prepare(state);
          const t0 = performance.now();
          await layer.computePairs(LAYER, c.x, batch, c.pairs);
          each.push(performance.now() - t0);
          jsNs += each.at(-1)! * 1e6;
        }
      }
      const p: KernelRunProfile = readKernelProfile();
      setKernelProfiling(false);
      // Per layer call (a layer whose experts exceed one group runs several native calls).
      const perCall = (ns: number): number => ns / each.length / 1e6;
      const distinct = cases.reduce((a, c) => a + new Set(c.pairs.expertIds).size, 0) / cases.length;
      const row = {
        format,
        batch,
        state,
        distinctExperts: distinct,
        layerMs: each.sort((a, b) => a - b)[each.length >> 1]!,
        meanLayerMs: jsNs / each.length / 1e6,
        nativeCallMs: perCall(p.callNs),
        checkMs: perCall(p.checkNs),
        quantizeXMs: perCall(p.quantizeXNs),
        gateUpMs: perCall(p.gateUpNs),
        quantizeHMs: perCall(p.quantizeHNs),
        downMs: perCall(p.downNs),
        wakeMsPerPhase: p.wakeNs / p.phases / 1e6,
        joinWaitMsPerPhase: p.joinWaitNs / p.phases / 1e6,
        nativeCallsPerLayer: p.calls / each.length,
        phasesPerCall: p.phases / p.calls,
        phasesWithoutWorker: p.phasesWithoutWorker,
        workerTaskShare: p.workerTasks / (p.workerTasks + p.mainTasks),
        javascriptMs: (jsNs - p.callNs) / each.length / 1e6,
      };
      calls.push(row);
      console.error(JSON.stringify(row));
    }
  }
  program.release();
  await layer.close();
}

console.log('| format | cache | threads | MB per call | GB/s | ms |');
console.log('|---|---|---|---|---|---|');
for (const r of probes as { format: string; state: string; threads: number; mbPerCall: number; gbPerSecond: number; msPerCall: number }[]) {
  console.log(`| ${r.format} | ${r.state} | ${r.threads} | ${r.mbPerCall.toFixed(1)} | ${r.gbPerSecond.toFixed(1)} | ${r.msPerCall.toFixed(3)} |`);
}
console.log('| format | batch | cache | layer ms | native call | quantise x | gate/up | quantise h | down | wake / phase | join / phase | worker share | JS |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
const f = (v: number): string => v.toFixed(3);
for (const r of calls as { format: string; batch: number; state: string; layerMs: number; nativeCallMs: number; quantizeXMs: number; gateUpMs: number; quantizeHMs: number; downMs: number; wakeMsPerPhase: number; joinWaitMsPerPhase: number; workerTaskShare: number; javascriptMs: number }[]) {
  console.log(`| ${r.format} | ${r.batch} | ${r.state} | ${f(r.layerMs)} | ${f(r.nativeCallMs)} | ${f(r.quantizeXMs)} | ${f(r.gateUpMs)} | ${f(r.quantizeHMs)} | ${f(r.downMs)} | ${f(r.wakeMsPerPhase)} | ${f(r.joinWaitMsPerPhase)} | ${(100 * r.workerTaskShare).toFixed(0)} % | ${f(r.javascriptMs)} |`);
}
const report = { date: new Date().toISOString(), label: values.label, machine: rates, probes, calls };
const out = values.out ?? join('bench', 'results', `expert-kernel-anatomy-${report.date.slice(0, 10)}${values.label ? `-${values.label}` : ''}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
