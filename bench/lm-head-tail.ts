/**
 * The router's LM head run after run as a decode loop runs it (ROWS rows, a pause between runs as between steps),
 * per weight format and kernel (--expert-kernel as the router takes it), as the router builds it from a checkpoint:
 * `auto` keeps the stored format (the demo checkpoint's BF16 head: on the native kernel read into its own storage and
 * widened as read; on onnxruntime a graph widening chunk by chunk, its weights mapped from the safetensors file),
 * `float32` widens it at load, `int8` quantises it. Per format and kernel: the run
 * times' median, p90, p99 and max, the slow runs (> 3× the median) and their median spacing, and the page faults
 * and system time of the slow runs (process.resourceUsage around each run). A periodic slow run that faults nothing
 * is the machine aging mapped file pages (bench/mapped-read-spikes.py tells); one that faults is the allocator.
 *   npm run bench:lm-head-tail -- [--model DIR] [--formats auto,float32,int8] [--kernels auto,onnxruntime] [--seconds 15] [--interval-ms 20] [--rows 4] [--out FILE]
 * Pin it to an idle core (taskset -c 0) for a clean reading. Default model: .tmp/models/demo-hot (bench:rebalance's).
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { createLmHead } from '@expertmesh/model';
import { loadModelConfig } from '@expertmesh/model-config';
import { WeightReader, type WeightDtype } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION, EXPERT_KERNELS, type ExpertKernel } from '@expertmesh/tensor-ops';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { percentile } from './bench-server.js';
import { machineDescription } from './machine.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: join(process.cwd(), '.tmp', 'models', 'demo-hot') },
    formats: { type: 'string', default: 'auto,float32,int8' },
    kernels: { type: 'string', default: 'auto,onnxruntime' },
    seconds: { type: 'string', default: '15' },
    'interval-ms': { type: 'string', default: '20' },
    rows: { type: 'string', default: '4' },
    out: { type: 'string' },
  },
});
const SECONDS = Number(values.seconds);
const INTERVAL_MS = Number(values['interval-ms']);
const ROWS = Number(values.rows);
for (const [flag, v] of [['--seconds', SECONDS], ['--interval-ms', INTERVAL_MS], ['--rows', ROWS]] as const) {
  if (!(Number.isFinite(v) && v >= 0)) throw new Error(`${flag} must be a non-negative number`);
}
const modelDir = values.model;
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });
const config = await loadModelConfig(modelDir);

const pct = (xs: readonly number[], p: number): number => Math.round(percentile(xs, p) * 10) / 10;
const results = [];
const kernels = values.kernels.split(',').map((k) => {
  if (!(EXPERT_KERNELS as readonly string[]).includes(k)) throw new Error(`--kernels: ${k} is not one of ${EXPERT_KERNELS.join(', ')}`);
  return k as ExpertKernel;
});
for (const kernel of kernels) for (const format of values.formats.split(',') as WeightDtype[]) {
  const checkpoint = await SafetensorsCheckpoint.open(modelDir);
  const reader = new WeightReader(checkpoint, config, format);
  const weight = await reader.lmHead();
  const head = await createLmHead(config, await reader.finalNorm(), weight, { ...DEFAULT_EXECUTION, intraOpThreads: 1, productKernel: kernel });
  const x = Float32Array.from({ length: ROWS * config.hiddenSize }, (_, i) => Math.sin(i));
  const times: number[] = [];
  const slow: { atMs: number; ms: number; minorFaults: number; systemMs: number }[] = [];
  let median = Infinity;
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    const r0 = process.resourceUsage();
    const t = performance.now();
    await head.run(x, ROWS);
    const ms = performance.now() - t;
    const r1 = process.resourceUsage();
    times.push(ms);
    if (times.length % 20 === 0) median = percentile(times, 50);
    if (ms > 3 * median) slow.push({ atMs: Math.round(t - start), ms: Math.round(ms * 10) / 10, minorFaults: r1.minorPageFault - r0.minorPageFault, systemMs: Math.round((r1.systemCPUTime - r0.systemCPUTime) / 100) / 10 });
    await new Promise((r) => setTimeout(r, INTERVAL_MS));
  }
  await head.release();
  await checkpoint.close();
  const spacing = slow.slice(1).map((s, i) => s.atMs - slow[i]!.atMs).sort((a, b) => a - b);
  const result = {
    format,
    requestedKernel: kernel,
    weight: weight.kind === 'file' ? `stored ${weight.dtype} (${head.kernel === 'native' ? "read into the kernel's storage" : 'mapped from the checkpoint'})` : weight.kind === 'quantized' ? `int${weight.q.bits} codes` : 'float32 in memory',
    kernel: head.kernel,
    runs: times.length,
    medianMs: pct(times, 50),
    p90Ms: pct(times, 90),
    p99Ms: pct(times, 99),
    maxMs: pct(times, 100),
    slowRuns: slow.length,
    slowSpacingMedianMs: spacing.length ? spacing[spacing.length >> 1]! : null,
    slowWithoutFaults: slow.filter((s) => s.minorFaults === 0).length,
    slow: slow.slice(0, 60),
  };
  results.push(result);
  console.log(`${format}, --expert-kernel ${kernel} (${result.weight}, ${result.kernel}): median ${result.medianMs} p90 ${result.p90Ms} p99 ${result.p99Ms} max ${result.maxMs} ms; slow ${result.slowRuns} of ${result.runs} (${result.slowWithoutFaults} without page faults), median spacing ${result.slowSpacingMedianMs ?? '-'} ms`);
}
if (values.out) {
  await mkdir(dirname(values.out), { recursive: true });
  await writeFile(values.out, `${JSON.stringify({ date: new Date().toISOString().slice(0, 10), machine: machineDescription(), model: modelDir, rows: ROWS, intervalMs: INTERVAL_MS, seconds: SECONDS, results })}\n`);
}
