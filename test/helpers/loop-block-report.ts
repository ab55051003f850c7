import { afterEach, beforeEach } from 'vitest';
import { LoopBlockWatch } from './loop-block-watch.js';

/**
 * A setup file (vitest.config.ts) that names the test holding its worker's event loop for long. vitest's worker
 * calls its runner over RPC with a 60 s timeout; a single piece of synchronous work that long (15–30 s of work on
 * an idle machine is enough on a busy one: a real-width onnxruntime session created on the test's thread) fails the
 * run with "[vitest-worker]: Timeout calling onTaskUpdate", attributed to no test. This reports every block of
 * REPORT_MS or more, with the test that was running, as a warning of its file; it asserts nothing (timing belongs in
 * benchmarks). Move such work off the thread (test/helpers/off-thread.ts) or give the loop turns between pieces.
 */
const PERIOD_MS = 250;
const REPORT_MS = 10_000;

let during = "the file's collection or a beforeAll/afterAll hook";
const watch = new LoopBlockWatch(PERIOD_MS, REPORT_MS, performance.now());
setInterval(() => {
  const block = watch.tick(performance.now(), during);
  if (block) console.warn(`[loop-block] this test worker's event loop was held ${(block.ms / 1000).toFixed(1)} s in one piece, ending in: ${block.during} (its RPC to vitest times out at 60 s)`);
}, PERIOD_MS).unref();

beforeEach((ctx) => {
  during = ctx.task.name;
});
afterEach((ctx) => {
  during = `the hooks after ${ctx.task.name}`;
});
