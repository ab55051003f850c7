/**
 * The `bench` preset held in the checkpoint's format (BF16, FP8 with block scales) against float32:
 * weight bytes, load time against the time to read the checkpoint's bytes from disk, and in-process
 * decode throughput at batch 1, 8 and 32.
 *   node --import tsx bench/weight-formats.ts [--batches 1,8,32]
 * Makes .tmp/models/bench (BF16) and .tmp/models/bench-fp8 on first use.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { Engine, GREEDY } from '@expertmesh/engine';
import { loadLocalExperts, LocalRoutedExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';
import { ensureBenchModel } from './bench-model.js';
import { runDecode } from './decode-run.js';

const { values } = parseArgs({ options: { batches: { type: 'string' }, out: { type: 'string' } } });
const batches = (values.batches ?? '1,8,32').split(',').map(Number);
const bf16Dir = await ensureBenchModel();
const fp8Dir = join('.tmp', 'models', 'bench-fp8');
if (!existsSync(join(fp8Dir, 'config.json'))) await makeCheckpoint({ preset: 'bench', outDir: fp8Dir, dtype: 'bfloat16', fp8: true, seed: 0 });

async function checkpointFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).map((f) => join(dir, f));
}

/** Drops the files from the page cache (GNU dd's nocache: POSIX_FADV_DONTNEED), so the next read comes from disk. */
function dropFromCache(files: readonly string[]): void {
  for (const f of files) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Seconds to read every byte of the files, and their size. */
async function readSeconds(files: readonly string[]): Promise<{ seconds: number; bytes: number }> {
  const buf = Buffer.allocUnsafe(64 << 20);
  let bytes = 0;
  const t0 = performance.now();
  for (const f of files) {
    const h = await open(f, 'r');
    for (let n; (n = (await h.read(buf, 0, buf.length, null)).bytesRead) > 0; ) bytes += n;
    await h.close();
  }
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

const variants: { name: string; dir: string; weightDtype: WeightDtype }[] = [
  { name: 'float32 (from the BF16 checkpoint)', dir: bf16Dir, weightDtype: 'float32' },
  { name: 'BF16 as stored', dir: bf16Dir, weightDtype: 'auto' },
  { name: 'FP8 + block scales as stored', dir: fp8Dir, weightDtype: 'auto' },
];

const rows = [];
for (const v of variants) {
  const files = await checkpointFiles(v.dir);
  dropFromCache(files);
  const cold = await readSeconds(files);
  const warm = await readSeconds(files);
  const maxBatch = Math.max(...batches);
  const load = async () => {
    const t0 = performance.now();
    const experts = await loadLocalExperts(v.dir, await loadModelConfig(v.dir), DEFAULT_EXECUTION, v.weightDtype);
    const engine = await Engine.load(v.dir, { experts, weightDtype: v.weightDtype, kvCacheTokens: maxBatch * 160, maxBatchSize: maxBatch, maxBatchedTokens: 1024 });
    const readyS = (performance.now() - t0) / 1000;
    await engine.generate([{ promptTokenIds: [1, 2, 3], maxTokens: 1, sampling: GREEDY, ignoreEos: true }]);
    return { engine, experts, readyS, firstTokenS: (performance.now() - t0) / 1000 };
  };
  dropFromCache(files);
  const coldLoad = await load();
  await coldLoad.engine.close();
  const { engine, experts, readyS, firstTokenS } = await load();
  const decode = [];
  for (const batch of batches) decode.push(await runDecode(engine, batch, batch));
  rows.push({
    ...v,
    weightBytes: engine.model.denseWeightBytes + (experts instanceof LocalRoutedExperts ? experts.weightBytes : 0),
    checkpointBytes: cold.bytes,
    readColdS: cold.seconds,
    readWarmS: warm.seconds,
    loadColdS: coldLoad.readyS,
    loadColdFirstTokenS: coldLoad.firstTokenS,
    loadWarmS: readyS,
    loadWarmFirstTokenS: firstTokenS,
    rssBytes: process.memoryUsage().rss,
    decode,
  });
  console.error(rows.at(-1));
  await engine.close();
}

const report = { date: new Date().toISOString(), machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30) }, rows };
const out = values.out ?? join('bench', 'results', `weight-formats-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
console.log(`| weights held | weight MiB | ${batches.map((b) => `decode tok/s @${b}`).join(' | ')} |`);
console.log(`|---|---|${batches.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${r.name} | ${mib(r.weightBytes)} | ${r.decode.map((d) => d.decodeTokensPerSecond.toFixed(1)).join(' | ')} |`);
console.log('');
console.log('| weights held | checkpoint MiB | read cold / warm s | ready cold / warm s | first token cold / warm s |');
console.log('|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.name} | ${mib(r.checkpointBytes)} | ${r.readColdS.toFixed(2)} / ${r.readWarmS.toFixed(2)} | ${r.loadColdS.toFixed(2)} / ${r.loadWarmS.toFixed(2)} | ${r.loadColdFirstTokenS.toFixed(2)} / ${r.loadWarmFirstTokenS.toFixed(2)} |`);
}
