/**
 * How much of a decode step is JavaScript on the event loop (not onnxruntime, not waiting for shards):
 * the DeepSeek-V3 vocabulary and routing shape (256 routed experts, 8 chosen from 4 of 8 groups) at a
 * small width, decode at batch 1, 16 and 64, greedy and sampled (temperature 0.6, top-p 0.95), with the
 * routed experts in this process and on 2 shard processes.
 *
 * Each case runs twice. Plainly, for the figures: wall time per step; the event loop's busy time
 * (performance.eventLoopUtilization); and the time inside onnxruntime's native run() (timed around
 * the binding's call: onnxruntime-node runs graphs synchronously on the main thread). JavaScript
 * time = busy − onnxruntime; the rest of the wall time the loop waits (for shards). Then under V8's
 * sampling profiler, only to say where in the JavaScript the time goes (by source file).
 *   node --import tsx bench/decode-js-time.ts [--model DIR] [--label before|after] [--out FILE]
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig } from '@expertmesh/model-config';
import { GREEDY, type SamplingParams } from '@expertmesh/engine';
import { openDecodeEngine, type DecodeEngine } from './decode-engine.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, label: { type: 'string', default: 'run' }, out: { type: 'string' }, batches: { type: 'string' }, steps: { type: 'string' } } });
const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'decode-js');
if (!existsSync(join(modelDir, 'config.json'))) {
  console.error(`making the checkpoint in ${modelDir} …`);
  // The demo preset (real vocabulary, hidden 256) with the real model's expert count.
  await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0, overrides: { n_routed_experts: 256 } });
}
const config = await loadModelConfig(modelDir);
const batches = (values.batches ?? '1,16,64').split(',').map(Number);
const STEPS = Number(values.steps ?? 24);
const PROMPT = 32;
const SAMPLED: SamplingParams = { temperature: 0.6, topP: 0.95, topK: 0, seed: 1 };

/**
 * Time inside onnxruntime's native InferenceSession.run, the synchronous call every graph run makes:
 * sessions are built from a subclass that times it (the native method itself cannot be replaced).
 */
type NativeSession = new () => { run(...args: unknown[]): unknown };
const native = createRequire(import.meta.url)('onnxruntime-node/dist/binding.js') as { binding: { InferenceSession: NativeSession } };
let onnxruntimeMs = 0;
native.binding.InferenceSession = class TimedSession extends native.binding.InferenceSession {
  override run(...args: unknown[]): unknown {
    const t0 = performance.now();
    try {
      return super.run(...args);
    } finally {
      onnxruntimeMs += performance.now() - t0;
    }
  }
};

interface Profile {
  readonly nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  readonly samples: number[];
  readonly timeDeltas: number[];
}

/** Sampled milliseconds by category: onnxruntime, idle, gc, and JavaScript by source file. */
function splitProfile(p: Profile): Map<string, number> {
  const parent = new Map<number, number>();
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const category = new Map<number, string>();
  const categorize = (id: number): string => {
    const cached = category.get(id);
    if (cached) return cached;
    const frames: { functionName: string; url: string }[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) frames.push(byId.get(at)!.callFrame);
    const leaf = frames[0]!;
    let c: string;
    if (frames.some((f) => f.url.includes('onnxruntime-node'))) c = 'onnxruntime (native graph runs)';
    // The profiler's own work when it stops (a native "dispatch" frame at the root): not the engine's.
    else if (frames.length <= 2 && leaf.functionName === 'dispatch' && leaf.url === '') c = 'profiler';
    else if (leaf.functionName === '(idle)') c = 'idle';
    else if (leaf.functionName === '(garbage collector)') c = 'js: garbage collection';
    else if (leaf.functionName === '(program)') c = 'js: (program)';
    else {
      const own = frames.find((f) => /\/(packages|services)\/[^/]+\/src\//.test(f.url));
      const lib = frames.find((f) => f.url.includes('node_modules'));
      c = own ? `js: ${basename(own.url)}` : lib ? `js: ${lib.url.replace(/.*node_modules\/((@[^/]+\/)?[^/]+).*/, '$1')}` : 'js: other';
    }
    category.set(id, c);
    return c;
  };
  const ms = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const c = categorize(id);
    ms.set(c, (ms.get(c) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  });
  return ms;
}

async function decodeSteps(engine: DecodeEngine, batch: number, sampling: SamplingParams, seed: number, steps: number, during: (run: () => Promise<void>) => Promise<void>): Promise<void> {
  let s = seed;
  const sequences = Array.from({ length: batch }, () =>
    engine.submit({
      promptTokenIds: Array.from({ length: PROMPT }, () => (s = (s * 48271) % 2147483647) % config.vocabSize),
      maxTokens: steps + 4,
      sampling,
      ignoreEos: true,
    }),
  );
  while (sequences.some((q) => q.outputTokenIds.length === 0)) await engine.step();
  await engine.step(); // one decode step to warm the decode-shaped graphs
  await during(async () => {
    for (let i = 0; i < steps; i++) await engine.step();
  });
  while (engine.hasWork) await engine.step();
}

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 100 });

const rows = [];
for (const shards of [0, 2]) {
  const engine = await openDecodeEngine(modelDir, shards, Math.max(...batches) * (PROMPT + STEPS + 40));
  for (const batch of batches) {
    for (const [name, sampling] of [['greedy', GREEDY], ['sampled', SAMPLED]] as const) {
      let wallMs = 0;
      let busyMs = 0;
      let ortMs = 0;
      await decodeSteps(engine, batch, sampling, batch, STEPS, async (run) => {
        const elu = performance.eventLoopUtilization();
        const ort = onnxruntimeMs;
        const t0 = performance.now();
        await run();
        wallMs = (performance.now() - t0) / STEPS;
        busyMs = performance.eventLoopUtilization(elu).active / STEPS;
        ortMs = (onnxruntimeMs - ort) / STEPS;
      });
      let profile: Profile | null = null;
      await decodeSteps(engine, batch, sampling, batch + 1, STEPS, async (run) => {
        await session.post('Profiler.start');
        await run();
        profile = ((await session.post('Profiler.stop')) as { profile: Profile }).profile;
      });
      const split = splitProfile(profile!);
      const perStep = (f: (k: string) => boolean): number => [...split].filter(([k]) => f(k)).reduce((a, [, v]) => a + v, 0) / STEPS;
      const js = perStep((k) => k.startsWith('js:'));
      const files = [...split]
        .filter(([k]) => k.startsWith('js:'))
        .sort((a, b) => b[1] - a[1])
        .slice(0, 8)
        .map(([k, v]) => ({ where: k.slice(4), msPerStep: v / STEPS }));
      const row = {
        experts: shards ? `${shards} shards` : 'in-process',
        batch,
        sampling: name,
        wallMsPerStep: wallMs,
        jsMsPerStep: busyMs - ortMs,
        onnxruntimeMsPerStep: ortMs,
        waitingMsPerStep: wallMs - busyMs,
        profiled: { jsMsPerStep: js, onnxruntimeMsPerStep: perStep((k) => k.startsWith('onnxruntime')), idleMsPerStep: perStep((k) => k === 'idle') },
        topJs: files,
      };
      rows.push(row);
      console.error(JSON.stringify(row));
    }
  }
  await engine.close();
}
session.disconnect();

const report = { date: new Date().toISOString(), label: values.label, model: `demo preset with 256 routed experts (vocabulary ${config.vocabSize}, hidden ${config.hiddenSize})`, promptTokens: PROMPT, steps: STEPS, rows };
const out = values.out ?? join('bench', 'results', `decode-js-time-${report.date.slice(0, 10)}-${values.label}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| experts | batch | sampling | step ms | JavaScript ms | onnxruntime ms | waiting ms | where the JavaScript goes (profiled, ms) |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const top = r.topJs.slice(0, 3).map((f) => `${f.where} ${f.msPerStep.toFixed(1)}`).join(', ');
  console.log(`| ${r.experts} | ${r.batch} | ${r.sampling} | ${r.wallMsPerStep.toFixed(1)} | ${r.jsMsPerStep.toFixed(1)} | ${r.onnxruntimeMsPerStep.toFixed(1)} | ${r.waitingMsPerStep.toFixed(1)} | ${top} |`);
}
