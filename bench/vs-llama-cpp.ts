/**
 * ExpertMesh's engine against llama.cpp on the same `bench` checkpoint, side by side in one run.
 *   npm run bench:vs-llama-cpp [-- --batches 1,8,32 --ours float32,int8,int4 --llama F32,BF16,Q8_0 --model DIR --out FILE]
 * 1. Installs node-llama-cpp 3.21.1 into .tmp/llama-cpp on first use (npm i -E --no-save: never a
 *    dependency of the project).
 * 2. Converts the checkpoint to GGUF (deepseek2) in F32, BF16 and Q8_0 with bench/gguf-from-checkpoint.ts.
 * 3. Checks the conversion: llama.cpp's F32 greedy tokens must equal ours (float32) on the same prompts,
 *    with an F32 KV cache and flash attention off (its defaults, F16 K/V, are not exact).
 * 4. Times both, each configuration in its own process (so resident memory is its own): prefill and
 *    decode tokens/s at each batch (prompts of 128 tokens, 16 timed decode steps), 2 threads.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Engine, GREEDY } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { ensureBenchModel } from './bench-model.js';
import { benchPrompts, DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { convertToGguf, type GgufFormat } from './gguf-from-checkpoint.js';

const LLAMA_CPP_PACKAGE = 'node-llama-cpp@3.21.1';
const THREADS = 2;
const CHECK_PROMPTS = 4;
const CHECK_TOKENS = 16;

const { values } = parseArgs({ options: { model: { type: 'string' }, batches: { type: 'string', default: '1,8,32' }, out: { type: 'string' }, worker: { type: 'string' }, ours: { type: 'string', default: 'float32,int8,int4' }, llama: { type: 'string', default: 'F32,BF16,Q8_0' } } });
const batches = values.batches.split(',').map(Number);
const scratch = resolve('.tmp', 'llama-cpp');

interface Timing {
  readonly batch: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
}
interface WorkerResult {
  readonly engine: string;
  readonly format: string;
  readonly rssAfterLoad: number;
  readonly rssAfterRuns: number;
  readonly timings: readonly Timing[];
  readonly checkTokens: readonly (readonly number[])[];
}

/** The few node-llama-cpp calls used, typed here (it is not a dependency, so no types at build time). */
interface LlamaSequence {
  evaluate(tokens: readonly number[], options: { temperature: number }): AsyncIterable<number>;
  evaluateWithoutGeneratingNewTokens(tokens: readonly number[]): Promise<void>;
  clearHistory(): Promise<void>;
}
interface LlamaModule {
  getLlama(o: { gpu: false; build: 'never'; logLevel: unknown }): Promise<{ loadModel(o: { modelPath: string; gpuLayers: number }): Promise<{ createContext(o: Record<string, unknown>): Promise<{ getSequence(): LlamaSequence; dispose(): Promise<void> }>; dispose(): Promise<void> }> }>;
  LlamaLogLevel: { error: unknown };
}

async function importLlamaCpp(): Promise<LlamaModule> {
  const entry = join(scratch, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
  if (!existsSync(entry)) {
    await mkdir(scratch, { recursive: true });
    await writeFile(join(scratch, 'package.json'), '{ "name": "llama-cpp-peer", "private": true, "type": "module" }\n');
    console.error(`installing ${LLAMA_CPP_PACKAGE} into ${scratch} …`);
    execFileSync('npm', ['i', '-E', LLAMA_CPP_PACKAGE, '--no-save', '--no-audit', '--no-fund'], { cwd: scratch, stdio: 'inherit' });
  }
  return (await import(pathToFileURL(entry).href)) as LlamaModule;
}

/** Greedy continuations of the check prompts, and prefill/decode timings per batch. */
async function runOurs(modelDir: string, dtype: WeightDtype): Promise<WorkerResult> {
  const config = await loadModelConfig(modelDir);
  const maxBatch = Math.max(...batches);
  const experts = await loadLocalExperts(modelDir, config, DEFAULT_EXECUTION, dtype);
  const engine = await Engine.load(modelDir, { experts, weightDtype: dtype, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
  const rssAfterLoad = process.memoryUsage().rss;
  const check = await engine.generate(benchPrompts(CHECK_PROMPTS, 7, config.vocabSize, 24).map((p) => ({ promptTokenIds: p, maxTokens: CHECK_TOKENS, sampling: GREEDY, ignoreEos: true })));
  await runDecode(engine, 2, 99); // warm-up (first runs of each session allocate), untimed
  const timings: Timing[] = [];
  for (const batch of batches) timings.push(await runDecode(engine, batch, batch));
  const rssAfterRuns = process.memoryUsage().rss;
  await engine.close();
  return { engine: 'expertmesh', format: dtype, rssAfterLoad, rssAfterRuns, timings, checkTokens: check.map((r) => r.tokenIds) };
}

async function runLlama(ggufPath: string, format: string, vocab: number): Promise<WorkerResult> {
  const lib = await importLlamaCpp();
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const maxBatch = Math.max(...batches);
  const context = await model.createContext({
    contextSize: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16),
    sequences: maxBatch,
    batchSize: 1024,
    threads: { ideal: THREADS, min: THREADS },
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  const rssAfterLoad = process.memoryUsage().rss;
  const generate = async (seq: LlamaSequence, prompt: readonly number[], n: number): Promise<number[]> => {
    const out: number[] = [];
    for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
      out.push(t);
      if (out.length >= n) break;
    }
    return out;
  };
  // One sequence per batch slot, reused (cleared) from run to run.
  const slots = Array.from({ length: maxBatch }, () => context.getSequence());
  const checkTokens: number[][] = [];
  for (const p of benchPrompts(CHECK_PROMPTS, 7, vocab, 24)) {
    checkTokens.push(await generate(slots[0]!, p, CHECK_TOKENS));
    await slots[0]!.clearHistory();
  }
  const timeBatch = async (batch: number, seed: number): Promise<Timing> => {
    const prompts = benchPrompts(batch, seed, vocab, PROMPT_TOKENS);
    const sequences = slots.slice(0, batch);
    // Prefill, as ours counts it: until every sequence has its first token (the prompt, then the
    // last prompt token's logits sampled). Then DECODE_STEPS steps, all sequences batched together.
    const t0 = performance.now();
    await Promise.all(sequences.map((s, i) => s.evaluateWithoutGeneratingNewTokens(prompts[i]!.slice(0, -1))));
    const iterators = sequences.map((s, i) => s.evaluate(prompts[i]!.slice(-1), { temperature: 0 })[Symbol.asyncIterator]());
    await Promise.all(iterators.map((it) => it.next()));
    const prefillSeconds = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    for (let step = 0; step < DECODE_STEPS; step++) await Promise.all(iterators.map((it) => it.next()));
    const decodeSeconds = (performance.now() - t1) / 1000;
    await Promise.all(iterators.map((it) => it.return?.()));
    for (const s of sequences) await s.clearHistory();
    return { batch, prefillTokensPerSecond: (batch * PROMPT_TOKENS) / prefillSeconds, decodeTokensPerSecond: (batch * DECODE_STEPS) / decodeSeconds };
  };
  await timeBatch(2, 99); // warm-up, untimed, as for ours
  const timings: Timing[] = [];
  for (const batch of batches) {
    timings.push(await timeBatch(batch, batch));
    console.error(format, timings.at(-1));
  }
  const rssAfterRuns = process.memoryUsage().rss;
  await context.dispose();
  await model.dispose();
  return { engine: 'llama.cpp', format, rssAfterLoad, rssAfterRuns, timings, checkTokens };
}

/** Runs one configuration in a child process (its own resident memory), returning its result. */
function inChild(worker: string): Promise<WorkerResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/vs-llama-cpp.ts', '--worker', worker, '--batches', values.batches, '--model', modelDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolvePromise(JSON.parse(out.trim().split('\n').at(-1)!) as WorkerResult) : reject(new Error(`worker ${worker} exited with ${code}`))));
  });
}

const modelDir = await ensureBenchModel(values.model);
const ggufDir = resolve('.tmp', 'gguf');
const ggufPath = (f: string): string => join(ggufDir, `${basename(resolve(modelDir))}-${f}.gguf`);

if (values.worker) {
  const [engine, format] = values.worker.split(':') as [string, string];
  const config = await loadModelConfig(modelDir);
  const result = engine === 'ours' ? await runOurs(modelDir, format as WeightDtype) : await runLlama(ggufPath(format), format, config.vocabSize);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

await importLlamaCpp();
await mkdir(ggufDir, { recursive: true });
const llamaFormats = values.llama.split(',') as GgufFormat[];
for (const f of new Set<GgufFormat>(['F32', ...llamaFormats])) {
  const path = ggufPath(f);
  if (existsSync(path) && statSync(path).mtimeMs > statSync(join(modelDir, 'config.json')).mtimeMs) continue;
  console.error(`converting to ${path} …`);
  await convertToGguf(modelDir, path, f);
}

const results: WorkerResult[] = [];
for (const f of values.ours.split(',')) results.push(await inChild(`ours:${f}`));
for (const f of llamaFormats) results.push(await inChild(`llama:${f}`));

const ourF32 = results.find((r) => r.engine === 'expertmesh' && r.format === 'float32');
const llamaF32 = results.find((r) => r.engine === 'llama.cpp' && r.format === 'F32');
const conversionCheck = ourF32 && llamaF32 ? ourF32.checkTokens.map((t, i) => ({ ours: t, llamaCpp: llamaF32.checkTokens[i]!, equal: JSON.stringify(t) === JSON.stringify(llamaF32.checkTokens[i]) })) : [];
const config = await loadModelConfig(modelDir);
const report = {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30) },
  model: `bench preset (${modelDir}), vocabulary ${config.vocabSize}`,
  llamaCpp: { package: LLAMA_CPP_PACKAGE, threads: THREADS, kvCache: 'F32', flashAttention: false },
  promptTokens: PROMPT_TOKENS,
  decodeSteps: DECODE_STEPS,
  conversionCheck,
  results,
};
const out = values.out ?? join('bench', 'results', `vs-llama-cpp-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);

const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
console.log(`conversion check (llama.cpp F32 greedy = ours float32, ${CHECK_PROMPTS} prompts × ${CHECK_TOKENS} tokens): ${conversionCheck.filter((c) => c.equal).length}/${conversionCheck.length} identical`);
// What each engine's lossy formats change: greedy continuations identical to its own exact format's.
for (const r of results) {
  const exact = r.engine === 'expertmesh' ? ourF32 : llamaF32;
  if (!exact || r === exact) continue;
  const same = r.checkTokens.filter((t, i) => JSON.stringify(t) === JSON.stringify(exact.checkTokens[i])).length;
  const firstDiff = r.checkTokens.map((t, i) => t.findIndex((x, j) => x !== exact.checkTokens[i]![j])).map((d) => (d < 0 ? CHECK_TOKENS : d));
  console.log(`${r.engine} ${r.format}: ${same}/${r.checkTokens.length} greedy continuations identical to ${exact.format} (first difference at tokens ${firstDiff.join(', ')})`);
}
console.log('');
console.log(`| engine | weights | ${batches.map((b) => `prefill @${b}`).join(' | ')} | ${batches.map((b) => `decode @${b}`).join(' | ')} | RSS MiB (load / end) |`);
console.log(`|---|---|${batches.map(() => '---').join('|')}|${batches.map(() => '---').join('|')}|---|`);
for (const r of results) {
  console.log(`| ${r.engine} | ${r.format} | ${r.timings.map((t) => t.prefillTokensPerSecond.toFixed(0)).join(' | ')} | ${r.timings.map((t) => t.decodeTokensPerSecond.toFixed(1)).join(' | ')} | ${mib(r.rssAfterLoad)} / ${mib(r.rssAfterRuns)} |`);
}
const pairs: [string, string][] = [['float32', 'F32'], ['int8', 'Q8_0'], ['int4', 'Q8_0'], ['float32', 'BF16']];
console.log('');
console.log(`| ours / llama.cpp | ${batches.map((b) => `prefill @${b}`).join(' | ')} | ${batches.map((b) => `decode @${b}`).join(' | ')} |`);
console.log(`|---|${batches.map(() => '---').join('|')}|${batches.map(() => '---').join('|')}|`);
for (const [o, l] of pairs) {
  const a = results.find((r) => r.engine === 'expertmesh' && r.format === o);
  const b = results.find((r) => r.engine === 'llama.cpp' && r.format === l);
  if (!a || !b) continue;
  const ratio = (k: keyof Timing): string => a.timings.map((t, i) => `${((t[k] as number) / (b.timings[i]![k] as number)).toFixed(2)}×`).join(' | ');
  console.log(`| ${o} / ${l} | ${ratio('prefillTokensPerSecond')} | ${ratio('decodeTokensPerSecond')} |`);
}
