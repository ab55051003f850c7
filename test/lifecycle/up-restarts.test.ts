import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { CLI } from '../helpers/cli.js';
import { streamCompletion, streamThroughFault } from '../helpers/completion-stream.js';
import { commandLine, descendants, waitUntilGone } from '../helpers/process-tree.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

/**
 * `expertmesh up --redundant-experts` keeps serving through a shard's kill -9 (its experts have
 * replicas) and starts crashed children again: the shard in its slot, the router on its port.
 */
describe('up keeps its cluster running', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let up: ChildProcess;
  let url: string;
  const log: string[] = [];
  const waitForLog = async (re: RegExp, from: number, timeoutMs = 60_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!log.slice(from).some((l) => re.test(l))) {
      if (Date.now() > deadline) throw new Error(`no log line matching ${re}:\n${log.slice(-20).join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const ready = async (): Promise<boolean> => (await fetch(`${url}/ready`).catch(() => null))?.status === 200;
  const childOf = (kind: RegExp): number => descendants(up.pid!).find((p) => kind.test(commandLine(p.pid)))!.pid;

  beforeAll(async () => {
    dir = await tempDir('up-restarts');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 3 });
    up = spawnTiedToTest(process.execPath, [CLI, 'up', '--model', `${dir.path}/demo`, '--shards', '2', '--redundant-experts', '64', '--port', '0'], { detached: true });
    createInterface({ input: up.stderr! }).on('line', (l) => log.push(l));
    url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: up.stdout! }).on('line', (l) => {
        const m = JSON.parse(l) as { event: string; url: string };
        if (m.event === 'ready') resolve(m.url);
      });
      up.once('exit', (code) => reject(new Error(`up exited ${code}:\n${log.join('\n')}`)));
    });
  });
  afterAll(async () => {
    const children = up ? descendants(up.pid!) : [];
    up?.kill('SIGINT');
    await waitUntilGone(children, 30_000);
    await dir?.remove();
  });

  it('kill -9 of a shard: a stream in flight finishes without an error (replicas), and up starts the shard again', async () => {
    const from = log.length;
    const [r] = await streamThroughFault(url, [{ model: 'demo', prompt: 'Still here', max_tokens: 60 }], () => void process.kill(childOf(/shard-id shard-1/), 'SIGKILL'));
    expect({ error: r!.error, done: r!.done, tokens: r!.tokens.length }).toEqual({ error: null, done: true, tokens: 60 });
    await waitForLog(/shard-1 is back on/, from);
  });

  it('kill -9 of the router: up starts it again on the same port, and it serves', async () => {
    const from = log.length;
    process.kill(childOf(/ serve /), 'SIGKILL');
    await waitForLog(/the router is back at/, from);
    const deadline = Date.now() + 60_000;
    while (!(await ready()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const r = await streamCompletion(url, { model: 'demo', prompt: 'Back again', max_tokens: 5 });
    expect({ error: r.error, done: r.done, tokens: r.tokens.length }).toEqual({ error: null, done: true, tokens: 5 });
  });
});
