import { describe, expect, it } from 'vitest';
import { LONE_HOLDER_FACTOR, RoundTripDeadline } from '../src/experts/round-trip-deadline.js';

const policy = { minMs: 50, maxMs: 10_000, p99Multiple: 4 };

describe('the adaptive dispatch deadline', () => {
  it('is the ceiling until the shard has a history', () => {
    const d = new RoundTripDeadline(policy);
    for (let i = 0; i < 7; i++) d.record(5, 8);
    expect(d.forCall(8)).toBe(10_000);
  });

  it('follows a few times the recent p99 round trip, scaled to the call size', () => {
    const d = new RoundTripDeadline(policy);
    // 8-token calls of 20 ms, one in a hundred of 40 ms: the p99 is 40 ms per 8 tokens.
    for (let i = 0; i < 200; i++) d.record(i % 100 === 0 ? 40 : 20, 8);
    expect(d.forCall(8)).toBeCloseTo(4 * 40, 5);
    // A call four times the (tokens + fixed cost) gets four times the time.
    expect(d.forCall(4 * (8 + 32) - 32)).toBeCloseTo(4 * 4 * 40, 5);
  });

  it('hedges a call after a multiple of the recent p99 round trip for its size, not before the shard has a history, never with multiple 0', () => {
    const hedge = { p99Multiple: 1.5, minMs: 10 };
    const d = new RoundTripDeadline(policy);
    for (let i = 0; i < 7; i++) d.record(20, 8);
    expect(d.hedgeAfter(8, hedge)).toBeNull();
    // 200 calls in all, two of them of 40 ms: the p99 is 40 ms per 8 tokens.
    for (let i = 0; i < 193; i++) d.record(i % 100 === 0 ? 40 : 20, 8);
    expect(d.hedgeAfter(8, hedge)).toBeCloseTo(1.5 * 40, 5);
    expect(d.hedgeAfter(4 * (8 + 32) - 32, hedge)).toBeCloseTo(4 * 1.5 * 40, 5);
    expect(d.hedgeAfter(8, { p99Multiple: 0, minMs: 10 })).toBeNull();
    const fast = new RoundTripDeadline(policy);
    for (let i = 0; i < 100; i++) fast.record(0.2, 8);
    expect(fast.hedgeAfter(8, hedge)).toBe(10);
  });

  it('never goes below the floor nor above the ceiling', () => {
    const fast = new RoundTripDeadline(policy);
    for (let i = 0; i < 100; i++) fast.record(0.2, 8);
    expect(fast.forCall(8)).toBe(50);
    const slow = new RoundTripDeadline(policy);
    for (let i = 0; i < 100; i++) slow.record(9000, 8);
    expect(slow.forCall(8)).toBe(10_000);
  });

  it('gives a call whose rows no other holder could take ten times the time, within the ceiling', () => {
    const d = new RoundTripDeadline(policy);
    for (let i = 0; i < 100; i++) d.record(0.2, 8);
    expect(d.forCall(8, true)).toBe(50);
    expect(d.forCall(8, false)).toBe(LONE_HOLDER_FACTOR * 50);
    const slow = new RoundTripDeadline(policy);
    for (let i = 0; i < 100; i++) slow.record(500, 8);
    expect(slow.forCall(8, false)).toBe(10_000);
  });

  it('adapts when a shard gets slower', () => {
    const d = new RoundTripDeadline(policy);
    for (let i = 0; i < 256; i++) d.record(20, 8);
    const before = d.forCall(8);
    expect(before).toBeCloseTo(80, 5);
    for (let i = 0; i < 256; i++) d.record(200, 8);
    expect(d.forCall(8)).toBeCloseTo(10 * before, 5);
  });
});
