import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { alive, killIfAlive, waitUntilGone, type ProcessId } from '../helpers/process-tree.js';
import { tempDir } from '../helpers/temp-dir.js';

const HELPERS = join(import.meta.dirname, '..', 'helpers');

/**
 * What a test starts through the helpers (a shard, a router) never outlives the test's worker, even when
 * the worker is killed before its afterAll runs (a timeout, kill -9): the helpers give each an IPC
 * channel, and the product's processes drain and exit when it closes.
 */
describe('processes a test starts', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let worker: ChildProcess | undefined;
  const children: ProcessId[] = [];

  beforeAll(async () => {
    dir = await tempDir('tied-to-test');
    await makeCheckpoint({ preset: 'demo', outDir: dir.path, seed: 3 });
  });
  afterAll(async () => {
    try {
      if (worker?.pid !== undefined) process.kill(-worker.pid, 'SIGKILL');
    } catch {
      // Already gone (the test killed it).
    }
    for (const c of children) killIfAlive(c);
    await dir?.remove();
  });

  it('exit when the test worker that started them is killed with kill -9', async () => {
    // A stand-in for a test worker: starts a shard and a router through the helpers, says their pids, then waits.
    const script = `
      import { startShardProcess } from ${JSON.stringify(join(HELPERS, 'shard-process.ts'))};
      import { startServeProcess } from ${JSON.stringify(join(HELPERS, 'serve-process.ts'))};
      import { processId } from ${JSON.stringify(join(HELPERS, 'process-tree.ts'))};
      const shard = await startShardProcess(['--model', ${JSON.stringify(dir.path)}, '--experts', 'all', '--listen', '127.0.0.1:0']);
      const router = await startServeProcess(['--model', ${JSON.stringify(dir.path)}, '--shard-addresses', shard.address]);
      console.log(JSON.stringify([processId(shard.pid), processId(router.process.pid)]));
      setInterval(() => {}, 1000);
    `;
    worker = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    worker.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const started = await new Promise<ProcessId[]>((resolve, reject) => {
      createInterface({ input: worker!.stdout! }).on('line', (line) => {
        if (line.startsWith('[{')) resolve(JSON.parse(line) as ProcessId[]);
      });
      worker!.once('exit', (code) => reject(new Error(`the stand-in worker exited (${code}) before starting both: ${stderr}`)));
    });
    children.push(...started);
    expect(started.every(alive)).toBe(true);

    // Only the worker: its children are not signalled, they must notice it is gone.
    process.kill(worker.pid!, 'SIGKILL');
    // Each drains (SIGTERM to itself), then exits; exitWithParent's bound is 15 s.
    expect(await waitUntilGone(started, 60_000)).toEqual([]);
  });
});
