/**
 * The quantisation an int8/int4 load does, matrix by matrix, timed two ways on the same checkpoint:
 * - `before`: what the loader did until issue 13v: widen the matrix to float32 (readLinearWeight: FP8 codes times
 *   their block scale, or BF16 widened) and run the quantiser it had (test/helpers/quantizer-reference.ts);
 * - `after`: what it does now (readQuantized: FP8 straight from its codes, other formats through the fast
 *   quantizeBlockwise).
 * Each matrix the loader quantises (attention projections, dense MLPs, shared and routed experts, LM head; not the
 * embedding, the gates or kv_b), both ways in turn (the order alternating), checked equal bit for bit, with the
 * time to read its bytes alone (the floor: the file is the same both ways). `--limit N` takes the first N matrices.
 *   node --import tsx bench/quantize-at-load.ts --model DIR [--formats int8,int4] [--paths before,after] [--limit N] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { QUANTIZED_FORMATS, readQuantized } from '@expertmesh/model-weights';
import type { BlockwiseQuantized } from '@expertmesh/tensor-ops';
import { readLinearWeight, scaleInvName, SafetensorsCheckpoint } from '@expertmesh/weights';
import { quantizeBlockwiseReference } from '../test/helpers/quantizer-reference.js';
import { quantizedDifference } from '../test/helpers/quantized-equality.js';
import { ensureBenchModel } from './bench-model.js';
import { machineDescription } from './machine.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, formats: { type: 'string', default: 'int8,int4' }, paths: { type: 'string', default: 'before,after' }, limit: { type: 'string' }, out: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);
const formats = values.formats.split(',') as ('int8' | 'int4')[];
const paths = values.paths.split(',') as ('before' | 'after')[];
for (const f of formats) if (!(f in QUANTIZED_FORMATS)) throw new Error(`--formats takes int8, int4, not ${f}`);
for (const p of paths) if (p !== 'before' && p !== 'after') throw new Error(`--paths takes before, after, not ${p}`);

const config = await loadModelConfig(modelDir);
const checkpoint = await SafetensorsCheckpoint.open(modelDir);
const blockSize = config.quantization?.weightBlockSize ?? null;
/** The matrices WeightReader quantises (use 'product'), in the layers the engine loads. */
const QUANTISED = /^(model\.layers\.(\d+)\.(self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|o_proj)|mlp\.(shared_experts\.|experts\.\d+\.)?(gate|up|down)_proj)|lm_head)\.weight$/;
const names = checkpoint.names().filter((n) => {
  const m = QUANTISED.exec(n);
  return m !== null && (m[2] === undefined || Number(m[2]) < config.numLayers);
});
const chosen = values.limit ? names.slice(0, Number(values.limit)) : names;

async function readBytes(name: string): Promise<number> {
  const start = performance.now();
  await checkpoint.readRaw(name);
  if (checkpoint.has(scaleInvName(name))) await checkpoint.readRaw(scaleInvName(name));
  return performance.now() - start;
}

const totals = Object.fromEntries(formats.map((f) => [f, { values: 0, readMs: 0, ...Object.fromEntries(paths.map((p) => [`${p}Ms`, 0])), ...(paths.includes('before') ? { widenMs: 0 } : {}) }])) as Record<string, Record<string, number>>;
let differences = 0;
for (const [index, name] of chosen.entries()) {
  const [rows, cols] = checkpoint.info(name).shape as [number, number];
  for (const format of formats) {
    const { bits, block } = QUANTIZED_FORMATS[format];
    const t = totals[format]!;
    t.values! += rows * cols;
    t.readMs! += await readBytes(name);
    const results: BlockwiseQuantized[] = [];
    for (const path of index % 2 ? [...paths].reverse() : paths) {
      const start = performance.now();
      if (path === 'before') {
        const widened = await readLinearWeight(checkpoint, name, blockSize);
        t.widenMs! += performance.now() - start;
        results.push(quantizeBlockwiseReference(widened, rows, cols, bits, block));
      } else results.push(await readQuantized(checkpoint, name, blockSize, rows, cols, bits, block));
      t[`${path}Ms`]! += performance.now() - start;
    }
    if (results.length === 2) {
      const difference = quantizedDifference(results[0]!, results[1]!);
      if (difference) {
        differences++;
        console.error(`${name} ${format}: the two paths differ (${difference})`);
      }
    }
  }
  if (index % 50 === 49) console.error(`${index + 1}/${chosen.length} matrices`, JSON.stringify(totals));
}
await checkpoint.close();

const summary = Object.fromEntries(
  Object.entries(totals).map(([format, t]) => [
    format,
    {
      ...t,
      ...Object.fromEntries(paths.map((p) => [`${p}MValuesPerS`, t.values! / 1e3 / t[`${p}Ms`]!])),
      ...(paths.length === 2 ? { speedup: t.beforeMs! / t.afterMs! } : {}),
      readMValuesPerS: t.values! / 1e3 / t.readMs!,
    },
  ]),
);
const result = { date: new Date().toISOString(), machine: machineDescription(), model: modelDir, fp8: blockSize !== null, matrices: chosen.length, of: names.length, differences, summary };
console.log(JSON.stringify(result, null, 2));
if (values.out) {
  await mkdir(dirname(values.out), { recursive: true });
  await writeFile(values.out, `${JSON.stringify(result, null, 2)}\n`);
}
if (differences > 0) process.exitCode = 1;
