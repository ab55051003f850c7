/**
 * What constrained decoding costs per token on the demo model (real DeepSeek-V3 vocabulary, 129,280
 * logits a step): greedy decode of the same prompt unconstrained, under a JSON schema, and forced
 * into a tool call, in process; plus the grammar compile time (first and cached).
 *   node --import tsx bench/constrained-decoding.ts [--model DIR] [--out FILE]
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Engine, GREEDY, type LogitsProcessor } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import { OutputConstraints, type OutputSpec } from '@expertmesh/router';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { Tokenizer } from '@expertmesh/tokenizer';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' } } });
const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo-v3');
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 1, chatTemplate: 'deepseek-v3' });
const config = await loadModelConfig(modelDir);
const tokenizer = (await Tokenizer.load(modelDir))!;
const engine = await Engine.load(modelDir, { experts: await loadLocalExperts(modelDir, config, DEFAULT_EXECUTION), kvCacheTokens: 4096 });
const constraints = new OutputConstraints(tokenizer, config.vocabSize, config.eosTokenIds);
const prompt = tokenizer.encode(tokenizer.chatTemplate!.render([{ role: 'user', content: 'Give me the weather in Paris as JSON.' }]), { addBos: false });

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 }, notes: { type: 'array', items: { type: 'string' } } },
  required: ['city', 'unit', 'days', 'notes'],
  additionalProperties: false,
};
const specs: Record<string, OutputSpec | null> = {
  unconstrained: null,
  json_schema: { kind: 'json', schema: WEATHER },
  tool_call: { kind: 'tool-calls', functions: [{ name: 'get_weather', parameters: WEATHER }], parallel: false, forced: true },
};

/** Times the grammar work apart from the model: wraps the constraint and sums its own time. */
class Timed implements LogitsProcessor {
  maskMs = 0;
  constructor(private readonly inner: LogitsProcessor) {}
  async process(logits: Float32Array): Promise<void> {
    const t = performance.now();
    await this.inner.process(logits);
    this.maskMs += performance.now() - t;
  }
  accept(token: number): void {
    const t = performance.now();
    this.inner.accept(token);
    this.maskMs += performance.now() - t;
  }
}

const MAX_TOKENS = 96;
const rows = [];
for (const [name, spec] of Object.entries(specs)) {
  let compileFirstMs = 0;
  let compileCachedMs = 0;
  if (spec) {
    let t = performance.now();
    await constraints.compiled(spec, { afterReasoning: false });
    compileFirstMs = performance.now() - t;
    t = performance.now();
    await constraints.compiled(spec, { afterReasoning: false });
    compileCachedMs = performance.now() - t;
  }
  const trials = [];
  for (let trial = 0; trial < 3; trial++) {
    const timed = spec ? new Timed(await constraints.constraint(spec, { afterReasoning: false })) : null;
    const seq = engine.submit({ promptTokenIds: prompt, maxTokens: MAX_TOKENS, sampling: GREEDY, ...(timed ? { logitsProcessors: [timed] } : {}) });
    while (seq.outputTokenIds.length === 0) await engine.step();
    const t = performance.now();
    const before = seq.outputTokenIds.length;
    const maskBefore = timed?.maskMs ?? 0;
    while (!seq.isFinished) await engine.step();
    const tokens = seq.outputTokenIds.length - before;
    trials.push({ tokens, msPerToken: (performance.now() - t) / Math.max(1, tokens), maskMsPerToken: ((timed?.maskMs ?? 0) - maskBefore) / Math.max(1, tokens), text: tokenizer.decode(seq.outputTokenIds) });
  }
  const best = trials.reduce((a, b) => (b.msPerToken < a.msPerToken ? b : a));
  rows.push({ name, compileFirstMs, compileCachedMs, ...best });
  console.error(rows.at(-1));
}
await engine.close();

const base = rows[0]!.msPerToken;
const report = { date: new Date().toISOString(), model: 'demo preset (4 layers, vocabulary 129,280), greedy, batch 1, in process', maxTokens: MAX_TOKENS, rows };
const out = values.out ?? join('bench', 'results', `constrained-decoding-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| output | tokens | ms / token | grammar ms / token | overhead | compile (first / cached) |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.name} | ${r.tokens} | ${r.msPerToken.toFixed(2)} | ${r.maskMsPerToken.toFixed(2)} | ${(100 * (r.msPerToken / base - 1)).toFixed(0)} % | ${r.compileFirstMs.toFixed(0)} ms / ${r.compileCachedMs.toFixed(2)} ms |`,
  );
}
