/**
 * For bench:rebalance --trace-dir: what the trace preload (bench/switch-trace.mjs) cannot see from inside the
 * router and the shards. Every 50 ms: each core's busy time (/proc/stat), etcd's CPU time (/proc/<pid>/stat) and
 * this process's (the client loops'); and this process's event-loop stalls over 10 ms (its token timestamps are
 * late by as much). JSON lines in `file`, `at` in epoch ms like the trace's. Linux only; clock ticks are 10 ms.
 */
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';

const epochNow = (): number => performance.timeOrigin + performance.now();

/** The process whose command line names etcd and `clientPort`, if any. */
function etcdPid(clientPort: number): string | undefined {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .find((d) => {
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
        return cmd.includes('etcd') && cmd.includes(`:${clientPort}`);
      } catch {
        return false;
      }
    });
}

/** Busy ticks per core (all but idle and iowait) and a process's user+system ticks. */
function ticks(pid: string | undefined): { cores: number[]; process: number } {
  const cores = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d/.test(l))
    .map((l) => {
      const f = l.split(/\s+/).slice(1, 9).map(Number);
      return f.reduce((a, b) => a + b, 0) - f[3]! - f[4]!;
    });
  let process = 0;
  try {
    // Fields after "(comm) ": utime and stime are the 12th and 13th.
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    process = Number(f[11]) + Number(f[12]);
  } catch {
    // etcd gone or not found: 0.
  }
  return { cores, process };
}

/** Starts sampling; returns a function that stops it. */
export function startCoreProbe(file: string, etcdClientPort: number): () => void {
  const pid = etcdPid(etcdClientPort);
  let last = ticks(pid);
  let cpu = process.cpuUsage();
  let at = epochNow();
  const sampler = setInterval(() => {
    const now = ticks(pid);
    const t = epochNow();
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    const record = {
      kind: 'probe',
      at,
      span: Math.round(t - at),
      coreBusyMs: now.cores.map((c, i) => (c - (last.cores[i] ?? c)) * 10),
      etcdMs: (now.process - last.process) * 10,
      benchMs: Math.round((used.user + used.system) / 100) / 10,
    };
    appendFileSync(file, `${JSON.stringify(record)}\n`);
    last = now;
    at = t;
  }, 50);
  let expected = performance.now() + 5;
  const stalls = setInterval(() => {
    const t = performance.now();
    if (t - expected > 10) appendFileSync(file, `${JSON.stringify({ kind: 'bench-stall', at: performance.timeOrigin + expected, ms: Math.round(t - expected) })}\n`);
    expected = t + 5;
  }, 5);
  sampler.unref();
  stalls.unref();
  return () => {
    clearInterval(sampler);
    clearInterval(stalls);
  };
}
