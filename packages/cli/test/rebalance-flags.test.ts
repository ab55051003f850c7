import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { rebalanceFlagSchema, rebalanceOptions } from '../src/rebalance-flags.js';

const parse = (flags: Record<string, string>) => rebalanceOptions(z.object(rebalanceFlagSchema).parse(flags));

describe('rebalance flags', () => {
  it('the loop runs only with --rebalance-interval, with a 60 s dead-slot grace unless told', () => {
    expect(parse({})).toEqual({ loadWindowMs: 60_000 });
    expect(parse({ 'rebalance-interval': '1s' })).toEqual({ loadWindowMs: 60_000, rebalance: { intervalMs: 1000, threshold: 1.25, minTokens: 2000, deadSlotGraceMs: 60_000 } });
    expect(parse({ 'rebalance-interval': '30s', 'dead-slot-grace': '2m' }).rebalance?.deadSlotGraceMs).toBe(120_000);
    expect(parse({ 'rebalance-interval': '30s', 'dead-slot-grace': '500ms' }).rebalance?.deadSlotGraceMs).toBe(500);
  });

  it('refuses a grace that is not a positive duration', () => {
    for (const bad of ['0', '-1s', 'soon', '10h']) expect(() => parse({ 'rebalance-interval': '1s', 'dead-slot-grace': bad })).toThrow();
  });
});
