/**
 * Where the in-process engine's resident memory goes, one contributor at a time: each variant (an
 * environment for glibc's malloc, or another allocator preloaded) runs bench/memory-probe.ts in a
 * process of its own, for each format. At each point (baseline, after load, after the bench runs)
 * the probe reports resident memory by kind of mapping, and the runs' prefill and decode speed.
 * Variants of PROBE_VARIANTS run the probe with arguments instead (`trim`: a malloc_trim(0) after each point, through
 * the native addon).
 * `--runtime compiled` runs the probe from the compiled build (`npm run build`, plain node, no tsx) instead of the sources.
 *   node --import tsx bench/resident-memory.ts [--model DIR] [--formats float32,int8,int4] [--variants default,arena-max-2,malloc-all] [--expert-kernel auto|onnxruntime|native] [--runtime sources|compiled] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { signalGroup, spawnTied } from '@expertmesh/process-lifecycle';
import { ensureBenchModel } from './bench-model.js';
import { buildWithEntries, parseRuntime } from './compiled-build.js';

const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';
const TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4';

const VARIANTS: Record<string, NodeJS.ProcessEnv> = {
  default: {},
  'arena-max-2': { MALLOC_ARENA_MAX: '2' },
  'mmap-threshold-1m': { MALLOC_MMAP_THRESHOLD_: String(1 << 20) },
  'mmap-threshold-128k': { MALLOC_MMAP_THRESHOLD_: String(128 << 10) },
  'mmap-threshold-4m': { MALLOC_MMAP_THRESHOLD_: String(4 << 20) },
  'mmap-threshold-16m': { MALLOC_MMAP_THRESHOLD_: String(16 << 20) },
  'trim-threshold-1m': { MALLOC_TRIM_THRESHOLD_: String(1 << 20) },
  'malloc-all': { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: String(1 << 20), MALLOC_TRIM_THRESHOLD_: String(1 << 20) },
  // Other allocators, preloaded (Debian's libjemalloc2 and libtcmalloc-minimal4): onnxruntime and V8 allocate
  // through malloc, so the preload covers both. The probe reports which allocator its process mapped.
  jemalloc: { LD_PRELOAD: JEMALLOC },
  'jemalloc-bg-1s': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0' },
  'jemalloc-bg-0': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0' },
  'jemalloc-bg-1s-narenas-2': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2' },
  'jemalloc-bg-5s': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0' },
  // Without jemalloc's dedicated arena for blocks of 8 MiB and more, which it purges at once when freed
  // (page faults on every large activation, as glibc's fixed mmap threshold).
  'jemalloc-bg-1s-no-oversize': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,oversize_threshold:0' },
  'jemalloc-bg-5s-no-oversize': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0' },
  'jemalloc-no-oversize': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'oversize_threshold:0' },
  // Fewer arenas: onnxruntime-node runs sessions on libuv's pool threads, each of which jemalloc would give
  // an arena of its own (8 per core), so an activation freed by one is not reused by the next.
  'jemalloc-bg-5s-no-oversize-narenas-1': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0,narenas:1' },
  'jemalloc-bg-5s-no-oversize-narenas-2': { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0,narenas:2' },
  tcmalloc: { LD_PRELOAD: TCMALLOC },
  'tcmalloc-release-10': { LD_PRELOAD: TCMALLOC, TCMALLOC_RELEASE_RATE: '10' },
};

/** Variants made inside the probe: a malloc_trim(0) after each point. */
const PROBE_VARIANTS: Record<string, string[]> = { trim: ['--trim'] };

const { values } = parseArgs({ options: { model: { type: 'string' }, formats: { type: 'string', default: 'float32,int8,int4' }, variants: { type: 'string', default: 'default,arena-max-2,malloc-all' }, batches: { type: 'string', default: '1,8,32' }, 'expert-kernel': { type: 'string', default: 'onnxruntime' }, runtime: { type: 'string', default: 'sources' }, out: { type: 'string' } } });
const modelDir = await ensureBenchModel(values.model);
const runtime = parseRuntime(values.runtime);
/** How the probe starts: its TypeScript through tsx, or its compiled module with plain node. */
const probe = runtime === 'compiled' ? [join(buildWithEntries('resident-memory', { 'memory-probe': 'bench/memory-probe.ts' }), 'memory-probe.mjs')] : ['--import', 'tsx', join(import.meta.dirname, 'memory-probe.ts')];

/** This process's environment without malloc settings of its own: the baseline every variant starts from. */
const ALLOCATOR_VARIABLE = /^(MALLOC_|TCMALLOC_|LD_PRELOAD$)/;
const glibcDefaults = Object.fromEntries(Object.entries(process.env).filter(([k]) => !ALLOCATOR_VARIABLE.test(k)));

const results = [];
for (const format of values.formats.split(',')) {
  for (const variant of values.variants.split(',')) {
    const probeArgs = PROBE_VARIANTS[variant] ?? [];
    const env = PROBE_VARIANTS[variant] ? {} : VARIANTS[variant];
    if (!env) throw new Error(`unknown variant ${variant}; one of ${[...Object.keys(VARIANTS), ...Object.keys(PROBE_VARIANTS)].join(', ')}`);
    // Not a Node child to spawnTied, which would add the malloc settings to every variant.
    const child = spawnTied(process.execPath, [...probe, '--model', modelDir, '--weight-dtype', format, '--batches', values.batches, '--expert-kernel', values['expert-kernel'], ...probeArgs], { env: { ...glibcDefaults, ...env } });
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
      console.error(`${format} ${variant} ${phase}: rss ${mib(data.rss)} MiB, peak since the last point ${mib(data.peakRss)} MiB, longest loop block ${Number(data.longestLoopBlockMs).toFixed(0)} ms, anon ${mib((data.byKind as Record<string, number>).anonymous)}, libs ${mib((data.byKind as Record<string, number>).libraries)}, ckpt ${mib((data.byKind as Record<string, number>).checkpointFiles)}, v8 ${mib(data.v8Heap)}, threads ${String(data.threads)}, allocator ${String(data.allocator)}${data.trim ? `, trim released ${mib((data.trim as Record<string, number>).releasedBytes)} MiB in ${((data.trim as Record<string, number>).microseconds / 1000).toFixed(1)} ms` : ''}${data.malloc ? `, glibc free ${mib((data.malloc as Record<string, number>).freeBytes)} of heap ${mib((data.malloc as Record<string, number>).heapBytes)}, mapped ${mib((data.malloc as Record<string, number>).mappedBytes)}` : ''}${data.weightBytes ? `, weights ${mib(data.weightBytes)} + kv ${mib(data.kvCacheBytes)}` : ''}${data.loadMs ? `, load ${JSON.stringify(data.loadMs)} ms` : ''}`);
    }
    const code = await new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', r)));
    clearTimeout(watchdog);
    if (code !== 0) console.error(`probe exited ${String(code)}: ${stderr.slice(-2000)}`);
    const runs = (points.at(-1)?.runs ?? []) as { batch: number; decodeTokensPerSecond: number; prefillTokensPerSecond: number }[];
    for (const r of runs) console.error(`  batch ${r.batch}: prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s`);
    results.push({ format, variant, expertKernel: values['expert-kernel'], runtime, env, probeArgs, points });
  }
}
const report = { date: new Date().toISOString(), model: modelDir, results };
const out = values.out ?? join('bench', 'results', `resident-memory-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.error(`wrote ${out}`);
