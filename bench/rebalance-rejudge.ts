/**
 * Judges a bench:rebalance JSON again from its raw token times (`streams`, `intervals`, `steadyPeriodsMs`, written
 * since round 12), with each way of choosing the steady periods (bench/steady-windows.ts), one line per event:
 * --until-seconds S judges only events that end by S s into the load, against steady periods cut at S (a run whose
 * steady state changed later on).
 *   node --import tsx bench/rebalance-rejudge.ts [--until-seconds 95] bench/results/rebalance-….json […]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { compareEvent, type SteadyPool } from './steady-windows.js';

const Run = z.object({
  label: z.string().nullable(),
  steadyPeriodsMs: z.array(z.tuple([z.number(), z.number()])),
  intervals: z.array(z.object({ event: z.string(), detail: z.string(), atMs: z.number(), switchedMs: z.number() })),
  streams: z.array(z.object({ tokenMs: z.array(z.number()) })),
});
const POOLS: SteadyPool[] = ['nearest', 'adjacent', 'run'];
const { values, positionals } = parseArgs({ options: { 'until-seconds': { type: 'string' } }, allowPositionals: true });
const until = values['until-seconds'] === undefined ? Infinity : Number(values['until-seconds']) * 1000;
if (!(until > 0)) throw new Error(`--until-seconds takes a positive number, not ${values['until-seconds']}`);
for (const file of positionals) {
  const run = Run.parse(JSON.parse(await readFile(file, 'utf8')));
  const streams = run.streams.map((s) => s.tokenMs);
  const periods = run.steadyPeriodsMs.filter(([a]) => a < until).map(([a, b]): [number, number] => [a, Math.min(b, until)]);
  for (const e of run.intervals.filter((i) => i.switchedMs <= until)) {
    const judged = POOLS.map((pool) => compareEvent(streams, periods, [e.atMs, e.switchedMs], pool, 50, 250));
    process.stdout.write(
      `${JSON.stringify({ file, event: e.event, detail: e.detail, switchMs: Math.round(e.switchedMs - e.atMs), duringMs: judged[0]!.duringMs, ...Object.fromEntries(judged.map((j) => [j.pool, { p90Ms: j.p90Ms, within: j.duringWithinP90, independent: j.independentWindows }])) })}\n`,
    );
  }
}
