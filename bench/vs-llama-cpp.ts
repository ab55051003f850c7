/**
 * ExpertMesh's engine against llama.cpp on the same `bench` checkpoint, side by side in one run.
 *   npm run bench:vs-llama-cpp [-- --batches 1,8,32 --ours float32,int8,int4 --llama F32,BF16,Q8_0 --threads 2
 *                                 --order ours-first|llama-first --no-settle --model DIR --out FILE
 *                                 --worker-timeout-s 600 --allow-conversion-mismatch --check-only --help]
 * 1. Installs node-llama-cpp 3.21.1 into .tmp/llama-cpp on first use (npm i -E --no-save: never a
 *    dependency of the project).
 * 2. Converts the checkpoint to GGUF (deepseek2) in F32, BF16 and Q8_0 with bench/gguf-from-checkpoint.ts,
 *    cached in .tmp/gguf under a key of the checkpoint, the converter's sources and the type (bench/gguf-cache.ts).
 * 3. Checks the conversion before any timing: llama.cpp's F32 greedy tokens must equal ours (float32) on the
 *    same prompts, with an F32 KV cache and flash attention off (its defaults, F16 K/V, are not exact). A
 *    difference stops the run (exit 1, naming the prompts and where they first differ) unless
 *    --allow-conversion-mismatch. --check-only stops after it (no timing).
 * 4. Times both, each configuration in its own process (so resident memory is its own): prefill and
 *    decode tokens/s at each batch (prompts of 128 tokens, 16 timed decode steps), on --threads threads
 *    in both engines (onnxruntime's intra-op threads and the native kernel's, llama.cpp's). Before the first
 *    timed worker it writes the page cache back and waits for a quiet machine (bench/machine-activity.ts), and
 *    each batch records what else the machine did meanwhile (CPU of other processes, dirty pages, huge-page
 *    faults): a worker timed beside other work is flagged in the printed table, not taken for a slow engine.
 * Each worker runs in a process group of its own, stopped on exit, error, SIGINT/SIGTERM and after
 * --worker-timeout-s.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Engine, GREEDY } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { WeightDtype } from '@expertmesh/model-weights';
import { liveTiedChildren, signalGroup, spawnTied, stopGroup } from '@expertmesh/process-lifecycle';
import { DEFAULT_EXECUTION, type ExecutionOptions } from '@expertmesh/tensor-ops';
import { ensureBenchModel } from './bench-model.js';
import { compareConversion, describeMismatch } from './conversion-check.js';
import { benchPrompts, DECODE_STEPS, PROMPT_TOKENS, runDecode } from './decode-run.js';
import { convertToGguf, type GgufFormat } from './gguf-from-checkpoint.js';
import { checkpointIdentity, converterVersion, ggufCacheKey, ggufCachePath, partialPath, removeStaleGguf } from './gguf-cache.js';
import { busiestBetween, processTicks, settle, withActivity, type Activity } from './machine-activity.js';
import { parseVsLlamaCppArgs, UsageError, VS_LLAMA_CPP_USAGE, type VsLlamaCppOptions } from './vs-llama-cpp-options.js';

const LLAMA_CPP_PACKAGE = 'node-llama-cpp@3.21.1';
const CHECK_PROMPTS = 4;
const CHECK_TOKENS = 16;

let parsed: VsLlamaCppOptions | 'help';
try {
  parsed = parseVsLlamaCppArgs(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(`error: ${e.message}\n\n${VS_LLAMA_CPP_USAGE}`);
  process.exit(2);
}
if (parsed === 'help') {
  process.stdout.write(VS_LLAMA_CPP_USAGE);
  process.exit(0);
}
const options = parsed;
const { batches, threads, workerTimeoutMs } = options;
/** Ours on exactly `threads` threads: onnxruntime's intra-op pools and the native kernel's (which take this count). */
const execution: ExecutionOptions = { ...DEFAULT_EXECUTION, intraOpThreads: threads };
const scratch = resolve('.tmp', 'llama-cpp');

interface Timing {
  readonly batch: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  /** What else the machine did during this batch's prefill and decode. */
  readonly activity: Activity;
}
interface WorkerResult {
  readonly engine: string;
  readonly format: string;
  /** Threads the engine ran on (ours: onnxruntime's intra-op count and the native kernel's; llama.cpp: its context's). */
  readonly threads: number;
  /** Ours: what ran the routed experts (`auto` resolved at load). */
  readonly expertKernel?: string;
  readonly rssAfterLoad: number;
  readonly rssAfterRuns: number;
  readonly timings: readonly Timing[];
  readonly checkTokens: readonly (readonly number[])[];
  /** Set by the parent: the processes besides the worker (its parent included) that took the most CPU while it ran. */
  readonly busiestOthers?: readonly { pid: number; comm: string; cpuSeconds: number }[];
  /** Set by the parent: earlier attempts of this worker set aside for more work beside them (--busy-retries). */
  readonly busierAttempts?: readonly WorkerResult[];
}

/**
 * Above this many cores of other work beside any of its batches, a worker's figures are not clean: clean batches
 * saw 0.00–0.16 on the 2-core machine (kernel threads, the VM's agent); llama.cpp's F32 lost a fifth at batch 1
 * beside 0.23 (docs/benchmarks.md, issue-13y).
 */
const BUSY_BESIDE = 0.2;
/** The most other work, in cores, beside any batch of a worker. */
const besideCores = (r: WorkerResult): number => Math.max(0, ...r.timings.map((t) => t.activity.otherCores));

/** The few node-llama-cpp calls used, typed here (it is not a dependency, so no types at build time). */
interface LlamaSequence {
  evaluate(tokens: readonly number[], options: { temperature: number }): AsyncIterable<number>;
  evaluateWithoutGeneratingNewTokens(tokens: readonly number[]): Promise<void>;
  clearHistory(): Promise<void>;
}
interface LlamaModule {
  getLlama(o: { gpu: false; build: 'never'; logLevel: unknown; maxThreads: number }): Promise<{ loadModel(o: { modelPath: string; gpuLayers: number }): Promise<{ createContext(o: Record<string, unknown>): Promise<{ getSequence(): LlamaSequence; readonly currentThreads: number; dispose(): Promise<void> }>; dispose(): Promise<void> }> }>;
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

/** Greedy continuations of the check prompts, and (unless `checkOnly`) prefill/decode timings per batch. */
async function runOurs(modelDir: string, dtype: WeightDtype, checkOnly: boolean): Promise<WorkerResult> {
  const config = await loadModelConfig(modelDir);
  const maxBatch = Math.max(...batches);
  const experts = await loadLocalExperts(modelDir, config, execution, dtype);
  const expertKernel = experts.expertKernel;
  const engine = await Engine.load(modelDir, { execution, experts, weightDtype: dtype, kvCacheTokens: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16), maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
  const rssAfterLoad = process.memoryUsage().rss;
  const check = await engine.generate(benchPrompts(CHECK_PROMPTS, 7, config.vocabSize, 24).map((p) => ({ promptTokenIds: p, maxTokens: CHECK_TOKENS, sampling: GREEDY, ignoreEos: true })));
  const timings: Timing[] = [];
  if (!checkOnly) {
    await runDecode(engine, 2, 99); // warm-up (first runs of each session allocate), untimed
    for (const batch of batches) {
      const { result, activity } = await withActivity(() => runDecode(engine, batch, batch));
      timings.push({ ...result, activity });
    }
  }
  const rssAfterRuns = process.memoryUsage().rss;
  await engine.close();
  return { engine: 'expertmesh', format: dtype, threads: execution.intraOpThreads, expertKernel, rssAfterLoad, rssAfterRuns, timings, checkTokens: check.map((r) => r.tokenIds) };
}

async function runLlama(ggufPath: string, format: string, vocab: number, checkOnly: boolean): Promise<WorkerResult> {
  const lib = await importLlamaCpp();
  // maxThreads too: node-llama-cpp's own cap defaults to max(cores, 4).
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error, maxThreads: threads });
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const maxBatch = Math.max(...batches);
  const context = await model.createContext({
    contextSize: maxBatch * (PROMPT_TOKENS + DECODE_STEPS + 16),
    sequences: maxBatch,
    batchSize: 1024,
    threads: { ideal: threads, min: threads },
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
  const timeBatch = async (batch: number, seed: number): Promise<Omit<Timing, 'activity'>> => {
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
  const timings: Timing[] = [];
  if (!checkOnly) {
    await timeBatch(2, 99); // warm-up, untimed, as for ours
    for (const batch of batches) {
      const { result, activity } = await withActivity(() => timeBatch(batch, batch));
      timings.push({ ...result, activity });
      console.error(format, result);
    }
  }
  const rssAfterRuns = process.memoryUsage().rss;
  const usedThreads = context.currentThreads;
  await context.dispose();
  await model.dispose();
  return { engine: 'llama.cpp', format, threads: usedThreads, rssAfterLoad, rssAfterRuns, timings, checkTokens };
}

/**
 * Runs one configuration in a child process (its own resident memory) and process group (stopped with
 * whatever it started on exit, error, signal or timeout), returning its result.
 */
async function inChild(worker: string, spec: { gguf?: string; checkOnly?: boolean } = {}): Promise<WorkerResult> {
  const args = ['--import', 'tsx', 'bench/vs-llama-cpp.ts', '--worker', worker, '--batches', options.batchesText, '--model', modelDir, '--threads', String(threads)];
  if (spec.gguf) args.push('--gguf', spec.gguf);
  if (spec.checkOnly) args.push('--check-only');
  const ticksBefore = processTicks();
  const child: ChildProcess = spawnTied(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    void stopGroup(child, 5000);
  }, workerTimeoutMs);
  try {
    const code = await new Promise<number | string | null>((resolveExit, reject) => {
      child.once('error', reject);
      child.once('exit', (c, signal) => resolveExit(c ?? signal));
    });
    if (timedOut) throw new Error(`worker ${worker} did not finish within ${workerTimeoutMs / 1000} s (--worker-timeout-s): stopped`);
    if (code !== 0) throw new Error(`worker ${worker} exited with ${code}`);
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as WorkerResult;
    return { ...result, busiestOthers: busiestBetween(ticksBefore, processTicks(), new Set([child.pid!])) };
  } finally {
    clearTimeout(watchdog);
    await stopGroup(child, 5000);
  }
}

const modelDir = await ensureBenchModel(options.model);

if (options.worker) {
  const [engine, format] = options.worker.split(':') as [string, string];
  const config = await loadModelConfig(modelDir);
  if (engine !== 'ours' && !options.gguf) throw new Error('a llama.cpp worker needs --gguf');
  const result = engine === 'ours' ? await runOurs(modelDir, format as WeightDtype, options.checkOnly) : await runLlama(options.gguf!, format, config.vocabSize, options.checkOnly);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

// A signal stops the workers' process groups before this process goes (exit and errors: spawnTied's own hook).
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => {
    console.error(`${signal}: stopping the workers`);
    for (const c of liveTiedChildren()) signalGroup(c, 'SIGKILL');
    process.exit(code);
  });
}
console.error(`threads: ${threads} in both engines (ours: onnxruntime intra-op and the native kernel; llama.cpp: its context)`);

await importLlamaCpp();
const ggufDir = resolve('.tmp', 'gguf');
await mkdir(ggufDir, { recursive: true });
const llamaFormats = options.llama as GgufFormat[];
const [checkpoint, converter] = [await checkpointIdentity(modelDir), await converterVersion()];
const ggufPaths = new Map<GgufFormat, string>();
for (const f of new Set<GgufFormat>(['F32', ...llamaFormats])) {
  const path = ggufCachePath(ggufDir, modelDir, f, ggufCacheKey({ checkpoint, converter, format: f }));
  ggufPaths.set(f, path);
  for (const stale of await removeStaleGguf(ggufDir, path)) console.error(`removed ${stale} (another checkpoint or converter)`);
  if (existsSync(path)) continue;
  console.error(`converting to ${path} …`);
  const partial = partialPath(path);
  try {
    await convertToGguf(modelDir, partial, f);
    await rename(partial, path);
  } finally {
    await rm(partial, { force: true });
  }
}

// The conversion check, before any timing: timings of two engines that compute different models compare nothing.
const exactOurs = await inChild('ours:float32', { checkOnly: true });
const exactLlama = await inChild('llama:F32', { checkOnly: true, gguf: ggufPaths.get('F32')! });
const check = compareConversion(exactOurs.checkTokens, exactLlama.checkTokens);
console.log(`conversion check (llama.cpp F32 greedy = ours float32, ${CHECK_PROMPTS} prompts × ${CHECK_TOKENS} tokens): ${check.identical}/${check.prompts.length} identical`);
if (!check.passed) {
  const detail = describeMismatch(check);
  if (!options.allowConversionMismatch) {
    console.error(`error: llama.cpp's F32 greedy tokens differ from ours (float32) on ${check.prompts.length - check.identical} of ${check.prompts.length} check prompts, so the GGUF (${ggufPaths.get('F32')}) does not compute our model and no timing was run:\n${detail}\nFind out why (the converter's keys and tensor layout, bench/gguf-from-checkpoint.ts), or pass --allow-conversion-mismatch to time the engines anyway.`);
    process.exit(1);
  }
  console.error(`warning: the conversion check failed and --allow-conversion-mismatch was given: timing anyway\n${detail}`);
}
if (options.checkOnly) process.exit(check.passed ? 0 : 1);

// The first timed worker is the one exposed to what ran before it (the conversions' gigabytes of dirty page
// cache, a neighbour still busy): write back and wait for quiet, or say it was not quiet.
const settled = options.settle ? await settle() : undefined;
if (settled) {
  console.error(`settled in ${settled.seconds.toFixed(1)} s: dirty page cache ${settled.dirtyMiBBefore.toFixed(0)} → ${settled.dirtyMiBAfter.toFixed(0)} MiB, the rest of the machine at ${settled.otherCores.toFixed(2)} cores`);
  if (!settled.quiet) console.error(`warning: the machine did not become quiet (other work at ${settled.otherCores.toFixed(2)} cores): timings may be low, see each batch's activity in the JSON`);
}
const timed = [...options.ours.map((f) => `ours:${f}`), ...llamaFormats.map((f) => `llama:${f}`)];
if (options.order === 'llama-first') timed.sort((a, b) => Number(b.startsWith('llama:')) - Number(a.startsWith('llama:')));
const results: WorkerResult[] = [];
for (const w of timed) {
  const format = w.slice(w.indexOf(':') + 1) as GgufFormat;
  const spec = w.startsWith('llama:') ? { gguf: ggufPaths.get(format)! } : {};
  const attempts = [await inChild(w, spec)];
  // A neighbour's burst (a type check, a build) halves small-batch figures on 2 cores: wait and time again.
  while (attempts.length <= options.busyRetries && besideCores(attempts.at(-1)!) > BUSY_BESIDE) {
    console.error(`${w}: other work at ${besideCores(attempts.at(-1)!).toFixed(2)} cores beside its timings: waiting for quiet and timing it again`);
    await settle();
    attempts.push(await inChild(w, spec));
  }
  attempts.sort((a, b) => besideCores(a) - besideCores(b));
  const [kept, ...busier] = attempts as [WorkerResult, ...WorkerResult[]];
  results.push(busier.length ? { ...kept, busierAttempts: busier } : kept);
}

const conversionCheck = check.prompts.map((p) => ({ ours: p.ours, llamaCpp: p.llamaCpp, equal: p.firstDifference === null, firstDifference: p.firstDifference }));
const config = await loadModelConfig(modelDir);
const report = {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30) },
  model: `bench preset (${modelDir}), vocabulary ${config.vocabSize}`,
  threads,
  llamaCpp: { package: LLAMA_CPP_PACKAGE, threads, kvCache: 'F32', flashAttention: false },
  order: options.order,
  timedOrder: timed,
  settled: settled ?? null,
  gguf: Object.fromEntries(ggufPaths),
  promptTokens: PROMPT_TOKENS,
  decodeSteps: DECODE_STEPS,
  conversionCheck,
  results,
};
const out = options.out ?? join('bench', 'results', `vs-llama-cpp-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);

const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
console.log(`threads: ${threads} (${results.map((r) => `${r.engine} ${r.format} ${r.threads}${r.expertKernel ? `, experts on ${r.expertKernel}` : ''}`).join('; ')})`);
// What each engine's lossy formats change: greedy continuations identical to its own exact format's.
for (const r of results) {
  const exact = r.engine === 'expertmesh' ? exactOurs : exactLlama;
  if (r.format === exact.format) continue;
  const same = r.checkTokens.filter((t, i) => JSON.stringify(t) === JSON.stringify(exact.checkTokens[i])).length;
  const firstDiff = r.checkTokens.map((t, i) => t.findIndex((x, j) => x !== exact.checkTokens[i]![j])).map((d) => (d < 0 ? CHECK_TOKENS : d));
  console.log(`${r.engine} ${r.format}: ${same}/${r.checkTokens.length} greedy continuations identical to ${exact.format} (first difference at tokens ${firstDiff.join(', ')})`);
}
console.log('');
// Other work beside a worker, in cores (the most of any batch).
console.log(`| engine | weights | ${batches.map((b) => `prefill @${b}`).join(' | ')} | ${batches.map((b) => `decode @${b}`).join(' | ')} | RSS MiB (load / end) | other work, cores |`);
console.log(`|---|---|${batches.map(() => '---').join('|')}|${batches.map(() => '---').join('|')}|---|---|`);
for (const r of results) {
  const beside = besideCores(r);
  console.log(`| ${r.engine} | ${r.format} | ${r.timings.map((t) => t.prefillTokensPerSecond.toFixed(0)).join(' | ')} | ${r.timings.map((t) => t.decodeTokensPerSecond.toFixed(1)).join(' | ')} | ${mib(r.rssAfterLoad)} / ${mib(r.rssAfterRuns)} | ${beside.toFixed(2)}${beside > BUSY_BESIDE ? ' (busy: not a clean figure)' : ''} |`);
}
for (const r of results) {
  const others = (r.busiestOthers ?? []).filter((o) => o.cpuSeconds >= 0.5);
  if (others.length) console.log(`beside ${r.engine} ${r.format}: ${others.map((o) => `${o.comm} (${o.pid}) ${o.cpuSeconds.toFixed(1)} s`).join(', ')}`);
  for (const b of r.busierAttempts ?? []) console.log(`${r.engine} ${r.format}: an attempt set aside (other work at ${besideCores(b).toFixed(2)} cores): decode ${b.timings.map((t) => t.decodeTokensPerSecond.toFixed(1)).join(' / ')}`);
}
const pairs: [string, string][] = [['float32', 'F32'], ['int8', 'Q8_0'], ['int4', 'Q8_0'], ['float32', 'BF16']];
console.log('');
console.log(`| ours / llama.cpp | ${batches.map((b) => `prefill @${b}`).join(' | ')} | ${batches.map((b) => `decode @${b}`).join(' | ')} |`);
console.log(`|---|${batches.map(() => '---').join('|')}|${batches.map(() => '---').join('|')}|`);
for (const [o, l] of pairs) {
  const a = results.find((r) => r.engine === 'expertmesh' && r.format === o);
  const b = results.find((r) => r.engine === 'llama.cpp' && r.format === l);
  if (!a || !b) continue;
  const ratio = (k: 'prefillTokensPerSecond' | 'decodeTokensPerSecond'): string => a.timings.map((t, i) => `${(t[k] / b.timings[i]![k]).toFixed(2)}×`).join(' | ');
  console.log(`| ${o} / ${l} | ${ratio('prefillTokensPerSecond')} | ${ratio('decodeTokensPerSecond')} |`);
}
