import { channel } from 'node:diagnostics_channel';

/** One engine step as STEP_CHANNEL reports it: when it ran, how long each phase took, and what it held. */
export interface StepReport {
  /** Epoch ms when the step began (before its plan). */
  readonly at: number;
  /** The model's run of the batch (execute), and the sampling and bookkeeping after it (commit), in ms. */
  readonly executeMs: number;
  readonly commitMs: number;
  readonly sequences: number;
  readonly tokens: number;
  readonly prefillTokens: number;
}

/**
 * The diagnostics channel (`node:diagnostics_channel`) every step is reported on: a measurement preload
 * (bench/switch-trace.mjs) subscribes to tell which steps a long gap between two tokens holds. With
 * nothing subscribed a step costs one property read.
 */
export const STEP_CHANNEL = 'expertmesh:engine-step';
export const stepChannel = channel(STEP_CHANNEL);
