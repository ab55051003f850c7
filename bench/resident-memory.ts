/**
 * Where the in-process engine's resident memory goes, one contributor at a time: each variant (an
 * environment for glibc's malloc) runs bench/memory-probe.ts in a
 * process of its own, for each format. At each point (baseline, after load, after the bench runs)
 * the probe reports resident memory by kind of mapping, and the runs' prefill and decode speed.
 *   node --import tsx bench/resident-memory.ts [--model DIR] [--formats float32,int8,int4] [--variants default,arena-max-2,malloc-all] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { signalGroup, spawnTied } from '@expertmesh/process-lifecycle';
import { ensureBenchModel } from './bench-model.js';

const VARIANTS: Record<string, NodeJS.ProcessEnv> = {
  default: {},
  'arena-max-2': { MALLOC_ARENA_MAX: '2' },
  'mmap-threshold-1m': { MALLOC_MMAP_THRESHOLD_: String(1 << 20) },
  'mmap-threshold-128k': { MALLOC_MMAP_THRESHOLD_: String(128 << 10) },
  'mmap-threshold-4m': { MALLOC_MMAP_THRESHOLD_: String(4 << 20) },
  'mmap-threshold-16m': { MALLOC_MMAP_THRESHOLD_: String(16 << 20) },
  'trim-threshold-1m': { MALLOC_TRIM_THRESHOLD_: String(1 << 20) },
  'malloc-all': { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: String(1 << 20), MALLOC_TRIM_THRESHOLD_: String(1 << 20) },
};

const { values } = parseArgs({ options: { model: { type: 'string' }, formats: { type: 'string', default: 'float32,int8,int4' }, variants: { type: 'string', default: 'default,arena-max-2,malloc-all' }, batches: { type: 'string', default: '1,8,32' }, out: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);

/** This process's environment without malloc settings of its own: the baseline every variant starts from. */
const glibcDefaults = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MALLOC_')));

const results = [];
for (const format of values.formats.split(',')) {
  for (const variant of values.variants.split(',')) {
    const env = VARIANTS[variant];
    if (!env) throw new Error(`unknown variant ${variant}; one of ${Object.keys(VARIANTS).join(', ')}`);
    // Not a Node child to spawnTied, which would add the malloc settings to every variant.
    const child = spawnTied(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'memory-probe.ts'), '--model', modelDir, '--weight-dtype', format, '--batches', values.batches], { env: { ...glibcDefaults, ...env } });
    const watchdog = setTimeout(() => signalGroup(child, 'SIGKILL'), 8 * 60_000);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const points: Record<string, unknown>[] = [];
    for await (const line of createInterface({ input: child.stdout! })) {
      const m = /^probe (\S+) (.*)$/.exec(line);
      if (!m) continue;
      const phase = m[1] as string;
      const data = JSON.parse(m[2] as string) as Record<string, unknown>;
      points.push({ phase, ...data });
      const mib = (b: unknown): string => (Number(b) / 2 ** 20).toFixed(0);
      console.error(`${format} ${variant} ${phase}: rss ${mib(data.rss)} MiB, anon ${mib((data.byKind as Record<string, number>).anonymous)}, libs ${mib((data.byKind as Record<string, number>).libraries)}, ckpt ${mib((data.byKind as Record<string, number>).checkpointFiles)}, v8 ${mib(data.v8Heap)}, threads ${String(data.threads)}${data.weightBytes ? `, weights ${mib(data.weightBytes)} + kv ${mib(data.kvCacheBytes)}` : ''}`);
    }
    const code = await new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', r)));
    clearTimeout(watchdog);
    if (code !== 0) console.error(`probe exited ${String(code)}: ${stderr.slice(-2000)}`);
    const runs = (points.at(-1)?.runs ?? []) as { batch: number; decodeTokensPerSecond: number; prefillTokensPerSecond: number }[];
    for (const r of runs) console.error(`  batch ${r.batch}: prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s`);
    results.push({ format, variant, env, points });
  }
}
const report = { date: new Date().toISOString(), model: modelDir, results };
const out = values.out ?? join('bench', 'results', `resident-memory-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.error(`wrote ${out}`);
