import { describe, expect, it } from 'vitest';
import { LoopBlockWatch } from '../helpers/loop-block-watch.js';

describe('LoopBlockWatch (the setup file that names tests holding their worker’s event loop)', () => {
  it('reports a tick that came reportMs or more late, with what was running, and nothing for ticks on time', () => {
    const watch = new LoopBlockWatch(250, 10_000, 1_000);
    expect(watch.tick(1_250, 'a')).toBeNull();
    expect(watch.tick(1_520, 'a')).toBeNull();
    // Held 9.98 s: under the threshold.
    expect(watch.tick(11_750, 'b')).toBeNull();
    // Held 31 s (the tick 31.25 s after the last).
    expect(watch.tick(43_000, 'loads the float32 engine')).toEqual({ ms: 31_000, during: 'loads the float32 engine' });
    // Measured from the late tick, not from the start.
    expect(watch.tick(43_250, 'c')).toBeNull();
  });
});
