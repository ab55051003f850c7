/**
 * What the lossy formats cost in accuracy: int8 and int4 against float32 on the same checkpoint
 * (the `demo` and `bench` presets), over real text (this repository's README and docs, encoded with
 * the real DeepSeek-V3 tokenizer the demo preset ships; the bench preset's 32,768-token vocabulary
 * takes the ids modulo its size). Per format:
 *   - top-1 agreement of the next token over every position (teacher-forced on the text);
 *   - mean and p99 KL(float32 ‖ format) of the next-token distribution;
 *   - the share of greedy continuations (from prompts cut from the text) identical for 32 tokens;
 *   - the bytes of weights the engine holds (dense part, LM head, embeddings and routed experts, as held).
 * --formats lists the formats compared, each one format for every part (`int8`) or a mix (`int8-experts`: routed
 * experts int8, the rest float32; `experts=int8+dense=int8`: see weight-format-spec.ts).
 *   node --import tsx bench/quantized-accuracy.ts [--presets demo,bench] [--formats int8,int4] [--windows 8] [--window-tokens 256] [--prompts 16] [--out FILE]
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Engine, GREEDY } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { LatentKvCache, type HeldFormats } from '@expertmesh/model';
import { loadModelConfig } from '@expertmesh/model-config';
import { describeWeightFormats, uniformWeightFormats, type WeightFormats } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { Tokenizer } from '@expertmesh/tokenizer';
import { ensureBenchModel } from './bench-model.js';
import { parseWeightFormatSpec } from './weight-format-spec.js';

const { values } = parseArgs({
  options: { presets: { type: 'string', default: 'demo,bench' }, windows: { type: 'string', default: '8' }, 'window-tokens': { type: 'string', default: '256' }, prompts: { type: 'string', default: '16' }, formats: { type: 'string', default: 'int8,int4' }, out: { type: 'string' } },
});
const WINDOWS = Number(values.windows);
const WINDOW = Number(values['window-tokens']);
const PROMPTS = Number(values.prompts);
const PROMPT_TOKENS = 24;
const CONTINUATION = 32;
const FORMATS = values.formats.split(',').map((spec) => ({ spec, formats: parseWeightFormatSpec(spec) }));

const demoDir = join('.tmp', 'models', 'demo');
if (!existsSync(join(demoDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: demoDir, seed: 0 });
const presets = values.presets.split(',');
const models = [
  ...(presets.includes('demo') ? [{ preset: 'demo', dir: demoDir }] : []),
  ...(presets.includes('bench') ? [{ preset: 'bench', dir: await ensureBenchModel() }] : []),
];

const tokenizer = await Tokenizer.load(demoDir);
if (!tokenizer) throw new Error(`${demoDir} has no tokenizer files`);
const docs = ['README.md', ...(await readdir('docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];
const text = (await Promise.all(docs.map((f) => readFile(f, 'utf8')))).join('\n\n');
const textIds = tokenizer.encode(text);
if (textIds.length < WINDOWS * WINDOW + PROMPTS * PROMPT_TOKENS) throw new Error(`the text has ${textIds.length} tokens, fewer than the windows and prompts need`);
console.error(`text: ${textIds.length} tokens from ${docs.length} files`);

/** log-softmax in float64. */
function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** Logits at every position of `ids`: one forward pass with each position its own one-token segment. */
async function positionLogits(engine: Engine, ids: readonly number[]): Promise<readonly Float32Array[]> {
  const cache = LatentKvCache.forModel(engine.config, ids.length);
  const blocks = Array.from({ length: cache.numBlocks }, (_, i) => i);
  const result = await engine.model.forward(
    ids.map((t, p) => ({ tokenIds: [t], startPosition: p, length: 1, blocks, wantLogits: true })),
    cache,
  );
  return result.logits;
}

const percentile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

const rows = [];
for (const m of models) {
  const config = await loadModelConfig(m.dir);
  const ids = textIds.map((t) => t % config.vocabSize);
  /** What each load held: its routed experts' format, what ran them (`auto` resolved at load: the native kernel where built), its weights' bytes. */
  const held = new Map<string, { weightFormat: string; expertKernel: string; weightBytes: number; heldFormats: HeldFormats }>();
  const load = async (formats: WeightFormats): Promise<Engine> => {
    const experts = await loadLocalExperts(m.dir, config, DEFAULT_EXECUTION, formats.experts);
    const engine = await Engine.load(m.dir, { experts, weightDtype: formats, kvCacheTokens: PROMPTS * (PROMPT_TOKENS + CONTINUATION + 16), maxBatchSize: PROMPTS, maxBatchedTokens: 1024 });
    held.set(describeWeightFormats(formats), { weightFormat: experts.weightFormat, expertKernel: experts.expertKernel, weightBytes: engine.model.denseWeightBytes + experts.heldWeightBytes(), heldFormats: engine.model.heldFormats });
    return engine;
  };
  const float32 = await load(uniformWeightFormats('float32'));
  const reference = held.get('float32')!;
  const prompts = Array.from({ length: PROMPTS }, (_, i) => ids.slice(WINDOWS * WINDOW + i * PROMPT_TOKENS, WINDOWS * WINDOW + (i + 1) * PROMPT_TOKENS));
  const greedy = async (engine: Engine): Promise<(readonly number[])[]> =>
    (await engine.generate(prompts.map((p) => ({ promptTokenIds: p, maxTokens: CONTINUATION, sampling: GREEDY, ignoreEos: true })))).map((r) => r.tokenIds);
  const referenceContinuations = await greedy(float32);
  for (const { spec, formats } of FORMATS) {
    const engine = await load(formats);
    const loaded = held.get(describeWeightFormats(formats))!;
    const kl: number[] = [];
    let agree = 0;
    for (let w = 0; w < WINDOWS; w++) {
      const window = ids.slice(w * WINDOW, (w + 1) * WINDOW);
      const [exact, lossy] = [await positionLogits(float32, window), await positionLogits(engine, window)];
      for (let p = 0; p < window.length; p++) {
        const a = logSoftmax(exact[p]!);
        const b = logSoftmax(lossy[p]!);
        let d = 0;
        for (let v = 0; v < a.length; v++) d += Math.exp(a[v]!) * (a[v]! - b[v]!);
        kl.push(Math.max(0, d));
        if (argmax(a) === argmax(b)) agree++;
      }
    }
    const continuations = await greedy(engine);
    const identical = continuations.filter((c, i) => c.length === CONTINUATION && c.every((t, j) => t === referenceContinuations[i]![j])).length;
    rows.push({
      preset: m.preset,
      format: spec,
      parts: formats,
      weightFormat: loaded.weightFormat,
      heldFormats: loaded.heldFormats,
      expertKernel: loaded.expertKernel,
      referenceExpertKernel: reference.expertKernel,
      weightBytes: loaded.weightBytes,
      referenceWeightBytes: reference.weightBytes,
      positions: kl.length,
      top1Agreement: agree / kl.length,
      meanKl: kl.reduce((s, x) => s + x, 0) / kl.length,
      p99Kl: percentile(kl, 0.99),
      greedy32Identical: identical / PROMPTS,
      prompts: PROMPTS,
    });
    console.error(rows.at(-1));
    await engine.close();
  }
  await float32.close();
}

const report = {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30) },
  text: { files: docs, tokens: textIds.length, windows: WINDOWS, windowTokens: WINDOW, promptTokens: PROMPT_TOKENS, continuation: CONTINUATION },
  rows,
};
const out = values.out ?? join('bench', 'results', `quantized-accuracy-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| preset | format | routed experts | positions | top-1 agreement | mean KL | p99 KL | greedy 32 identical | weights MiB (float32) |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.preset} | ${r.format} | ${r.weightFormat} | ${r.positions} | ${(100 * r.top1Agreement).toFixed(1)} % | ${r.meanKl.toExponential(2)} | ${r.p99Kl.toExponential(2)} | ${(100 * r.greedy32Identical).toFixed(0)} % (${PROMPTS} prompts) | ${(r.weightBytes / 2 ** 20).toFixed(0)} (${(r.referenceWeightBytes / 2 ** 20).toFixed(0)}) |`);
}
