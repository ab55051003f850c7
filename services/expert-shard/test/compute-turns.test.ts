import { describe, expect, it } from 'vitest';
import { ComputeTurns } from '../src/compute-turns.js';

const turns = (n: number): Promise<void> => (n <= 0 ? Promise.resolve() : new Promise<void>((r) => setImmediate(() => void turns(n - 1).then(r))));
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('ComputeTurns', () => {
  it('runs one work at a time in arrival order; the next starts only after the previous answer was delivered', async () => {
    const q = new ComputeTurns();
    const log: string[] = [];
    const hold = deferred();
    const first = q.run(async () => {
      log.push('start 1');
      await hold.promise;
      log.push('end 1');
      return 1;
    });
    // The caller delivers the answer as soon as the work settles (as the server writes the response).
    const delivered = first.then((v) => log.push(`deliver ${v}`));
    const second = q.run(async () => {
      log.push('start 2');
      return 2;
    });
    await turns(10);
    expect(log).toEqual(['start 1']);
    hold.resolve();
    await delivered;
    expect(log).toEqual(['start 1', 'end 1', 'deliver 1']);
    expect(await second).toBe(2);
    expect(log).toEqual(['start 1', 'end 1', 'deliver 1', 'start 2']);
  });

  it('a failed work does not stop the ones behind it', async () => {
    const q = new ComputeTurns();
    const failed = q.run(async () => {
      throw new Error('bad request');
    });
    const next = q.run(async () => 'ok');
    await expect(failed).rejects.toThrow('bad request');
    expect(await next).toBe('ok');
  });
});
