import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { heapGrowthGivenByUser, HeapGrowthError, ROUTER_HEAP_GROWING_PERCENT, setHeapGrowth } from '../src/serving/heap-growth.js';

const MODULE = join(import.meta.dirname, '..', 'src', 'serving', 'heap-growth.ts');

/**
 * Runs a Node process that calls setHeapGrowth() (as the router does before serving), then builds a heap and
 * collects it twice; returns the growing factors V8 printed when it recomputed its old-generation limit
 * (--trace-gc-verbose: "[HeapController] Limit: old size: … KB, new limit: … KB (factor)").
 */
function limitFactorsAfterSetHeapGrowth(nodeFlags: readonly string[]): number[] {
  const script = `
    const { setHeapGrowth } = await import(${JSON.stringify(MODULE)});
    setHeapGrowth();
    const live = [];
    for (let i = 0; i < 200000; i++) live.push(['token-' + i, i]);
    globalThis.gc();
    globalThis.gc();
    console.log('live', live.length);`;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', '--trace-gc-verbose', ...nodeFlags, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(run.status, run.stderr).toBe(0);
  return [...run.stdout.matchAll(/\[HeapController\] Limit: old size: \d+ KB, new limit: \d+ KB \(([\d.]+)\)/g)].map((m) => Number(m[1]));
}

describe('the router heap growth', () => {
  it('makes V8 size the old generation at 1 + 50 % of what its full collections keep', () => {
    const factors = limitFactorsAfterSetHeapGrowth([]);
    expect(factors.length).toBeGreaterThanOrEqual(2);
    for (const f of factors) expect(f).toBe(1 + ROUTER_HEAP_GROWING_PERCENT / 100);
  });

  it('leaves a growing percent given to Node alone', () => {
    const factors = limitFactorsAfterSetHeapGrowth(['--heap-growing-percent=20']);
    expect(factors.length).toBeGreaterThanOrEqual(2);
    for (const f of factors) expect(f).toBe(1.2);
  });

  it("tells a user-given flag in Node's arguments, with dashes or underscores", () => {
    expect(heapGrowthGivenByUser(['--heap-growing-percent=20'])).toBe(true);
    expect(heapGrowthGivenByUser(['--expose-gc', '--heap_growing_percent=20'])).toBe(true);
    expect(heapGrowthGivenByUser(['--heap-growing-percentage=20', '--expose-gc', '--max-semi-space-size=16'])).toBe(false);
    expect(setHeapGrowth(ROUTER_HEAP_GROWING_PERCENT, true)).toBe(false);
  });

  it('refuses a percent that is not an integer in 0 … 300', () => {
    for (const bad of [-1, 301, 12.5, Number.NaN]) expect(() => setHeapGrowth(bad, true)).toThrow(HeapGrowthError);
  });
});
