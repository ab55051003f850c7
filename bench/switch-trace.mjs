// Measurement preload for bench:rebalance (`--trace-dir DIR`): loaded into the router and every shard with
// NODE_OPTIONS=--import, it appends JSON lines to DIR/<pid>.jsonl, each with `at` in epoch ms (shared by all
// processes): event-loop stalls over 15 ms, CPU time per 50 ms, onnxruntime session creations and runs (the first
// of each session apart), garbage collections of 2 ms or more, the synchronous slices the code times (`sync`:
// timedSync in @expertmesh/discovery), and the process's own stderr lines. Plain JavaScript so it loads before tsx.
import { appendFileSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

const dir = process.env.EXPERTMESH_SWITCH_TRACE_DIR;
if (dir) {
  const file = join(dir, `${process.pid}.jsonl`);
  const now = () => performance.timeOrigin + performance.now();
  // `thread` 0 is the process's main thread; a shard's expert worker threads (which load this too) have their own ids.
  const emit = (rec) => appendFileSync(file, `${JSON.stringify({ pid: process.pid, thread: threadId, ...rec })}\n`);
  // `tid`: the thread's kernel id (Node 20 names every thread "node"), to tell a worker thread apart in `threads` records.
  emit({ kind: 'start', at: now(), argv: process.argv.slice(2, 6).join(' '), tid: Number(readlinkSync('/proc/thread-self').split('/')[2]) });

  const stderrWrite = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk, ...rest) => {
    emit({ kind: 'log', at: now(), line: String(chunk).slice(0, 300).trimEnd() });
    return stderrWrite(chunk, ...rest);
  };

  // Synchronous slices the code reports (timedSync, `expertmesh:sync-work`): a switch's plan and record handling, by name.
  const { subscribe } = await import('node:diagnostics_channel');
  subscribe('expertmesh:sync-work', (work) => emit({ kind: 'sync', what: work.what, at: work.at, ms: Math.round(work.ms * 100) / 100, cpuMs: Math.round(work.cpuMs * 100) / 100 }));

  // The router's steps, MoE layers and shard calls (packages/engine's STEP_CHANNEL, the router's dispatch channels):
  // which steps a long gap between two tokens holds, and whether they waited on a shard or computed. Many per
  // second, so they are written in batches (every 200 ms; a killed process loses at most its last batch).
  let batch = [];
  const emitBatched = (rec) => batch.push(`${JSON.stringify({ pid: process.pid, thread: threadId, ...rec })}\n`);
  setInterval(() => {
    if (batch.length === 0) return;
    appendFileSync(file, batch.join(''));
    batch = [];
  }, 200).unref();
  const round = (x) => Math.round(x * 100) / 100;
  subscribe('expertmesh:engine-step', (s) => emitBatched({ kind: 'step', at: s.at, executeMs: round(s.executeMs), commitMs: round(s.commitMs), sequences: s.sequences, tokens: s.tokens, prefillTokens: s.prefillTokens }));
  subscribe('expertmesh:moe-layer', (l) => emitBatched({ kind: 'moe', at: l.at, layer: l.layer, tokens: l.tokens, planMs: round(l.planMs), waitMs: round(l.waitMs), combineMs: round(l.combineMs) }));
  subscribe('expertmesh:shard-call', (c) => emitBatched({ kind: 'call', at: c.at, layer: c.layer, shard: c.shard, rows: c.rows, ms: round(c.roundTripMs), computeMs: round(c.computeMs), queueMs: round(c.queueMs), hedge: c.hedge, resent: c.resent }));

  // Event-loop stalls: a 5 ms timer that fires late by more than 15 ms.
  let expected = now() + 5;
  setInterval(() => {
    const t = now();
    if (t - expected > 15) emit({ kind: 'stall', at: expected, ms: Math.round(t - expected) });
    expected = t + 5;
  }, 5).unref();

  // CPU time of the whole process (every thread) per 50 ms, to see who takes the cores during a switch (main thread only: it counts the workers too).
  let cpuAt = now();
  let cpu = process.cpuUsage();
  if (threadId === 0) setInterval(() => {
    const t = now();
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    emit({ kind: 'cpu', at: cpuAt, ms: Math.round((used.user + used.system) / 100) / 10, span: Math.round(t - cpuAt) });
    cpuAt = t;
  }, 50).unref();

  // The router's threads one by one (main, the re-plan worker, onnxruntime's, libuv's, V8's), every 20 ms: each
  // thread's time on a CPU and waiting for one in that slice, in ms, from /proc/self/task/TID/schedstat (nanoseconds,
  // unlike cpuUsage's per-process sum), its name (comm) and nice value (stat field 19). Only threads that ran or
  // waited are written. To see what shares the router's one core (`--pinned`) during a switch.
  if (threadId === 0 && process.argv.includes('serve')) {
    const last = new Map();
    const read = (path) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return null; // the thread ended between listing and reading
      }
    };
    let sliceAt = now();
    setInterval(() => {
      const t = now();
      const threads = [];
      for (const tid of readdirSync('/proc/self/task')) {
        const sched = read(`/proc/self/task/${tid}/schedstat`);
        if (sched === null) continue;
        const [runNs, waitNs] = sched.split(' ').map(Number);
        const before = last.get(tid);
        last.set(tid, [runNs, waitNs]);
        if (!before) continue;
        const run = (runNs - before[0]) / 1e6;
        const wait = (waitNs - before[1]) / 1e6;
        if (run < 0.05 && wait < 0.05) continue;
        const stat = read(`/proc/self/task/${tid}/stat`) ?? '';
        // Fields after the parenthesised name: state is field 3, nice field 19.
        const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
        threads.push({ tid: Number(tid), name: (read(`/proc/self/task/${tid}/comm`) ?? '').trim(), nice, run: Math.round(run * 100) / 100, wait: Math.round(wait * 100) / 100 });
      }
      if (threads.length > 0) emit({ kind: 'threads', at: sliceAt, span: Math.round(t - sliceAt), threads });
      sliceAt = t;
    }, 20).unref();
  }

  // EXPERTMESH_SWITCH_PROFILE_SECONDS=N: a V8 CPU profile of the first N seconds, written to DIR/<pid>.cpuprofile
  // (a worker thread's to DIR/<pid>-thread<N>.cpuprofile)
  // (the bench's shards are killed, so the profile is written when the time is up, not at exit). The 'profile'
  // record gives the epoch ms at which it started, to map its samples onto the other records.
  const profileSeconds = Number(process.env.EXPERTMESH_SWITCH_PROFILE_SECONDS ?? 0);
  if (profileSeconds > 0) {
    const { Session } = await import('node:inspector');
    const { writeFileSync } = await import('node:fs');
    const session = new Session();
    session.connect();
    const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 500 });
    await post('Profiler.start');
    emit({ kind: 'profile', at: now() });
    setTimeout(async () => {
      const { profile } = await post('Profiler.stop');
      // One file per thread: a worker thread's profile (the router's tokenizer) must not overwrite the main thread's.
      writeFileSync(join(dir, `${process.pid}${threadId === 0 ? '' : `-thread${threadId}`}.cpuprofile`), JSON.stringify(profile));
      emit({ kind: 'profile-written', at: now() });
    }, profileSeconds * 1000).unref();
  }

  // The main thread's heap each second: V8's used and total heap, external memory, and the time spent in garbage
  // collection in that second (all kinds, and major mark-compacts apart), to watch the heap over minutes of load.
  if (threadId === 0) {
    const { PerformanceObserver, constants } = await import('node:perf_hooks');
    let gcMs = 0;
    let majorMs = 0;
    let majors = 0;
    let minors = 0;
    // Major GCs by their callback flags (V8 sets ALL_EXTERNAL_MEMORY on those that external memory, e.g. ArrayBuffers, asked for).
    let majorFlags = {};
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        // Each collection of 2 ms or more on its own, to place it against a switch's other slices.
        if (e.duration >= 2) emit({ kind: 'gc', at: performance.timeOrigin + e.startTime, ms: Math.round(e.duration * 100) / 100, major: e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR });
        gcMs += e.duration;
        if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minors++;
        if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
          majorMs += e.duration;
          majors++;
          majorFlags[e.detail.flags] = (majorFlags[e.detail.flags] ?? 0) + 1;
        }
      }
    }).observe({ entryTypes: ['gc'] });
    setInterval(() => {
      const m = process.memoryUsage();
      emit({ kind: 'heap', at: now(), used: m.heapUsed, total: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, gcMs: Math.round(gcMs * 10) / 10, majorMs: Math.round(majorMs * 10) / 10, majors, majorFlags, minors });
      gcMs = 0;
      majorMs = 0;
      majors = 0;
      minors = 0;
      majorFlags = {};
    }, 1000).unref();
  }

  // EXPERTMESH_SWITCH_HEAP_SNAPSHOTS=30,90,150: V8 heap snapshots of the main thread at those seconds after start,
  // written to DIR/<pid>-<s>s.heapsnapshot, to compare what the heap holds over minutes of load.
  const snapshotSeconds = (process.env.EXPERTMESH_SWITCH_HEAP_SNAPSHOTS ?? '').split(',').filter(Boolean).map(Number);
  if (threadId === 0 && snapshotSeconds.length > 0 && process.argv.includes('serve')) {
    const v8 = await import('node:v8');
    for (const s of snapshotSeconds) {
      setTimeout(() => {
        const t0 = now();
        const path = v8.writeHeapSnapshot(join(dir, `${process.pid}-${s}s.heapsnapshot`));
        emit({ kind: 'heap-snapshot', at: t0, ms: Math.round(now() - t0), path });
      }, s * 1000).unref();
    }
  }

  const S = ort.InferenceSession;
  const create = S.create.bind(S);
  let sessions = 0;
  S.create = async (...args) => {
    const started = now();
    const session = await create(...args);
    // `s` numbers the sessions in creation order (per thread): a `run` record names its session by it.
    const s = sessions++;
    // The binding's loadModel runs synchronously inside create(); the wall time includes its setImmediate hop.
    emit({ kind: 'create', s, at: started, ms: Math.round(now() - started), outputs: session.outputNames.join(',') });
    const run = session.run.bind(session);
    let runs = 0;
    session.run = async (...a) => {
      const t0 = now();
      // The process's page faults and context switches over the run (every thread): a long run that faulted in pages
      // or was preempted (involuntary switches) says so.
      const r0 = process.resourceUsage();
      const out = await run(...a);
      const ms = now() - t0;
      runs++;
      if (runs <= 3 || ms > 20) {
        const r1 = process.resourceUsage();
        emit({ kind: runs === 1 ? 'first-run' : 'run', s, n: runs, at: t0, ms: Math.round(ms * 10) / 10, minorFaults: r1.minorPageFault - r0.minorPageFault, majorFaults: r1.majorPageFault - r0.majorPageFault, preempted: r1.involuntaryContextSwitches - r0.involuntaryContextSwitches, yielded: r1.voluntaryContextSwitches - r0.voluntaryContextSwitches, cpuMs: Math.round((r1.userCPUTime + r1.systemCPUTime - r0.userCPUTime - r0.systemCPUTime) / 100) / 10, systemMs: Math.round((r1.systemCPUTime - r0.systemCPUTime) / 100) / 10 });
      }
      return out;
    };
    return session;
  };
}
