import { z } from 'zod';
import type { FlagSpec } from './flags.js';

/** "60s", "2m", "500ms" or plain seconds, as milliseconds. */
export const durationFlag = z
  .string()
  .regex(/^\d+(\.\d+)?(ms|s|m)?$/, 'a duration like 60s, 2m or 500ms')
  .transform((s) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s)!;
    return Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 } as const)[(m[2] ?? 's') as 'ms' | 's' | 'm'];
  })
  .pipe(z.number().positive());

export const REBALANCE_USAGE = '[--load-window 60s] [--rebalance-interval 60s [--rebalance-threshold 1.25] [--rebalance-min-tokens 2000] [--dead-slot-grace 60s]]';

export const rebalanceFlagSpec = {
  'load-window': { type: 'string' },
  'rebalance-interval': { type: 'string' },
  'rebalance-threshold': { type: 'string' },
  'rebalance-min-tokens': { type: 'string' },
  'dead-slot-grace': { type: 'string' },
} satisfies FlagSpec;

export const rebalanceFlagSchema = {
  'load-window': durationFlag.default('60s'),
  'rebalance-interval': durationFlag.optional(),
  'rebalance-threshold': z.coerce.number().pipe(z.number().min(1)).default(1.25),
  'rebalance-min-tokens': z.coerce.number().pipe(z.number().int().nonnegative()).default(2000),
  'dead-slot-grace': durationFlag.default('60s'),
};

/** The router options these flags give. */
export function rebalanceOptions(flags: { 'load-window': number; 'rebalance-interval'?: number | undefined; 'rebalance-threshold': number; 'rebalance-min-tokens': number; 'dead-slot-grace': number }): {
  loadWindowMs: number;
  rebalance?: { intervalMs: number; threshold: number; minTokens: number; deadSlotGraceMs: number };
} {
  return {
    loadWindowMs: flags['load-window'],
    ...(flags['rebalance-interval'] !== undefined
      ? { rebalance: { intervalMs: flags['rebalance-interval'], threshold: flags['rebalance-threshold'], minTokens: flags['rebalance-min-tokens'], deadSlotGraceMs: flags['dead-slot-grace'] } }
      : {}),
  };
}
