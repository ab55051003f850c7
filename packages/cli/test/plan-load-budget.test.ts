import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseModelConfig } from '@expertmesh/model-config';
import { runCli } from '../../../test/helpers/cli.js';
import { serveExpertLoad } from '../../../test/helpers/load-metrics.js';

const R1 = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'deepseek-r1-config.json');
const config = parseModelConfig(JSON.parse(readFileSync(R1, 'utf8')), 'r1');
const HOT = [0, 1, 2];
const GiB = 2 ** 30;

/** "0-3,8,10-11" → [0,1,2,3,8,10,11] */
const expand = (ranges: string): number[] =>
  ranges.split(',').flatMap((r) => {
    const [a, b] = r.split('-').map(Number);
    return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => a! + i);
  });

/** The table's rows: shard, experts of the first MoE layer, expert memory in GiB. */
const rows = (stdout: string): { slot: string; firstLayer: number[]; gib: number }[] =>
  [...stdout.matchAll(/^\| (shard-\d+) \| \d+ \| ([\d,-]+) \| ([\d.]+) GiB \|$/gm)].map((m) => ({ slot: m[1]!, firstLayer: expand(m[2]!), gib: Number(m[3]) }));

/**
 * The reviewer's case through the real CLI: DeepSeek-R1 on 8 shards under a budget the uniform plan
 * fits, with a measured load where three experts per layer take most tokens. Before, the budget was
 * only compared after planning: the load-weighted plan piled cold experts onto the shards without hot
 * ones (90 GiB on a 78.42 GiB budget, "fits: NO", exit 1).
 */
describe('expertmesh plan --load-from with --shard-memory', () => {
  let metrics: Awaited<ReturnType<typeof serveExpertLoad>>;
  let url = '';
  beforeAll(async () => {
    metrics = await serveExpertLoad(config.moeLayers, config.nRoutedExperts, (_layer, e) => (HOT.includes(e) ? 5000 : 10));
    url = metrics.url;
  });
  afterAll(async () => metrics?.close());

  const plan = (budget: string, redundant: number) =>
    runCli(['plan', '--config', R1, '--shards', '8', '--redundant-experts', String(redundant), '--shard-memory', budget, '--load-from', url]);

  it('plans within the budget: every shard fits and the hot experts still get the redundant copies', async () => {
    const r = await plan('78.42GiB', 6);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const table = rows(r.stdout);
    expect(table).toHaveLength(8);
    for (const row of table) expect(row.gib).toBeLessThanOrEqual(78.42);
    expect(r.stdout).toMatch(/fits: yes \(largest shard [\d.]+ GiB of 78\.42 GiB\)/);
    // 6 extra copies for 3 hot experts: 3 holders each in the first MoE layer, every other expert one.
    const holders = (e: number): number => table.filter((row) => row.firstLayer.includes(e)).length;
    for (const e of HOT) expect(holders(e)).toBe(3);
    for (let e = 0; e < config.nRoutedExperts; e++) if (!HOT.includes(e)) expect(holders(e)).toBe(1);
    expect(r.stdout).toMatch(/bytes per expert: 42\.01 MiB, as --weight-dtype auto predicts/);
    expect(r.stdout).not.toMatch(/do not fit the budget/);
  });

  it('gives up redundant copies, not the budget, when the copies asked for do not fit', async () => {
    // 76.15 GiB holds 1856 FP8 experts: 32 per layer on each shard, the experts once and no more.
    const r = await plan('76.15GiB', 6);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const row of rows(r.stdout)) expect(row.gib).toBeLessThanOrEqual(76.15);
    expect(r.stdout).toMatch(/6 redundant experts per layer do not fit the budget: the plan gives none/);
    const between = await plan('77GiB', 6);
    expect(between.code).toBe(0);
    const given = Number(/the plan gives (\d+) \(the hottest experts get them first\)/.exec(between.stdout)?.[1]);
    expect(given).toBeGreaterThan(0);
    expect(given).toBeLessThan(6);
    for (const row of rows(between.stdout)) expect(row.gib).toBeLessThanOrEqual(77);
  });

  it('a budget not even one copy of each expert fits: the plan asked for is printed, "fits: NO", what to do, exit code 1', async () => {
    const r = await plan('70GiB', 6);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/fits: NO \(largest shard [\d.]+ GiB of 70\.00 GiB\)/);
    expect(r.stdout).toMatch(/does not fit: .* even with no redundant experts: add shards \(--shards\/--nodes\) or give a larger --shard-memory/);
    expect(Math.max(...rows(r.stdout).map((row) => row.gib)) * GiB).toBeGreaterThan(70 * GiB);
  });
});
