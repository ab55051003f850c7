import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTER_STOP_MARGIN_MS, RouterProcess } from '../src/router-process.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/**
 * A stand-in for `serve`: says it listens, and on SIGTERM keeps "draining" for the whole of the
 * --drain-seconds it was given, then writes down how it ended and exits by itself.
 */
const FAKE_ROUTER = `
const args = process.argv.slice(2);
const drainSeconds = Number(args[args.indexOf('--drain-seconds') + 1]);
const { appendFileSync } = await import('node:fs');
process.on('SIGTERM', () => setTimeout(() => { appendFileSync(process.env.FAKE_ROUTER_LOG, JSON.stringify({ args, drained: true }) + '\\n'); process.exit(0); }, drainSeconds * 1000));
process.stdout.write(JSON.stringify({ event: 'listening', url: 'http://127.0.0.1:1' }) + '\\n');
setInterval(() => undefined, 1000);
`;

describe('up’s router process', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('router-process');
    await writeFile(join(dir.path, 'fake-router.mjs'), FAKE_ROUTER);
  });
  afterAll(async () => dir?.remove());

  it('is given --drain-seconds, and stop() waits for it to drain that long (plus a margin) instead of killing it first', async () => {
    const log = join(dir.path, 'router.log');
    const router = new RouterProcess(() => ['serve', '--port', '0'], { ...process.env, FAKE_ROUTER_LOG: log }, 2, join(dir.path, 'fake-router.mjs'));
    expect(router.stopGraceMs).toBe(2000 + ROUTER_STOP_MARGIN_MS);
    expect(await router.start()).toBe('http://127.0.0.1:1');
    await router.stop();
    // It exited by itself at the end of its whole drain time (the line it writes then), not killed before.
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { args: string[]; drained: boolean });
    expect(lines).toEqual([{ args: ['serve', '--port', '0', '--drain-seconds', '2'], drained: true }]);
  });
});
