// `--import` this into a Node process to learn when it collects its garbage in full: each major (mark-compact)
// collection of its main thread, with its start in epoch ms and its length, and each line it writes to stderr (its log)
// with the epoch ms it was written at, one JSON line each, appended to the file named by EXPERTMESH_RECORD_GC.
import { appendFileSync } from 'node:fs';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

const out = process.env.EXPERTMESH_RECORD_GC;
if (out && isMainThread) {
  const emit = (record) => appendFileSync(out, `${JSON.stringify(record)}\n`);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) emit({ kind: 'major-gc', at: performance.timeOrigin + e.startTime, ms: e.duration });
  }).observe({ entryTypes: ['gc'] });
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk, ...rest) => {
    emit({ kind: 'log', at: performance.timeOrigin + performance.now(), line: String(chunk) });
    return write(chunk, ...rest);
  };
}
