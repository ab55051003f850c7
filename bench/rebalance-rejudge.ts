/**
 * Judges a bench:rebalance JSON again from its raw token times (`streams`, `intervals`, `steadyPeriodsMs`, written
 * since round 12), with each way of choosing the steady periods (bench/steady-windows.ts), one line per event:
 *   node --import tsx bench/rebalance-rejudge.ts bench/results/rebalance-….json […]
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { compareEvent, type SteadyPool } from './steady-windows.js';

const Run = z.object({
  label: z.string().nullable(),
  steadyPeriodsMs: z.array(z.tuple([z.number(), z.number()])),
  intervals: z.array(z.object({ event: z.string(), detail: z.string(), atMs: z.number(), switchedMs: z.number() })),
  streams: z.array(z.object({ tokenMs: z.array(z.number()) })),
});
const POOLS: SteadyPool[] = ['nearest', 'adjacent', 'run'];
for (const file of process.argv.slice(2)) {
  const run = Run.parse(JSON.parse(await readFile(file, 'utf8')));
  const streams = run.streams.map((s) => s.tokenMs);
  for (const e of run.intervals) {
    const judged = POOLS.map((pool) => compareEvent(streams, run.steadyPeriodsMs, [e.atMs, e.switchedMs], pool, 50, 250));
    process.stdout.write(
      `${JSON.stringify({ file, event: e.event, detail: e.detail, switchMs: Math.round(e.switchedMs - e.atMs), duringMs: judged[0]!.duringMs, ...Object.fromEntries(judged.map((j) => [j.pool, { p90Ms: j.p90Ms, within: j.duringWithinP90, independent: j.independentWindows }])) })}\n`,
    );
  }
}
