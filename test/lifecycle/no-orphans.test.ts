import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdProcess } from '@expertmesh/discovery';
import { CLI } from '../helpers/cli.js';
import { commandLine, descendants, killIfAlive, waitUntilGone, type ProcessId } from '../helpers/process-tree.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

/**
 * Whatever `expertmesh up` and `serve --shards` start never outlives them: not when they are killed
 * with kill -9, not when they are stopped before they are ready, not when a child cannot start, and
 * not when etcd is unreachable while they stop.
 */
describe('no orphans, no hangs', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let demo: string;
  const spawned: ChildProcess[] = [];
  /** Every process the runs below started, by identity (pid and start time). */
  const seen = new Map<string, ProcessId>();

  /** Runs the CLI in a process group of its own, noting every process it starts (polled until it exits). */
  const run = (
    args: readonly string[],
  ): { child: ChildProcess; lines: string[]; exited: Promise<number | null>; started: () => ProcessId[]; waitFor: (re: RegExp, timeoutMs?: number) => Promise<string> } => {
    const child = spawnTiedToTest(process.execPath, [CLI, ...args], { detached: true });
    spawned.push(child);
    const lines: string[] = [];
    const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
    const onLine = (line: string): void => {
      lines.push(line);
      for (const w of waiters.filter((w) => w.re.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // Per run as well as overall, so that one failed test's leftovers do not fail the next.
    const mine = new Map<string, ProcessId>();
    const poll = setInterval(
      () =>
        descendants(child.pid!).forEach((p) => {
          seen.set(`${p.pid}:${p.start}`, p);
          mine.set(`${p.pid}:${p.start}`, p);
        }),
      50,
    );
    void exited.then(() => clearInterval(poll));
    const waitFor = (re: RegExp, timeoutMs = 120_000): Promise<string> =>
      new Promise((resolve, reject) => {
        const hit = lines.find((l) => re.test(l));
        if (hit) return resolve(hit);
        const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms:\n${lines.slice(-20).join('\n')}`)), timeoutMs);
        waiters.push({ re, resolve: (l) => (clearTimeout(timer), resolve(l)) });
        void exited.then((code) => reject(new Error(`exited (${code}) before a line matching ${re}:\n${lines.slice(-20).join('\n')}`)));
      });
    return { child, lines, exited, started: () => [...mine.values()], waitFor };
  };
  /** The etcd folder (owner.pid and data) of an `up`, from its etcd's command line. */
  const etcdFolderOf = (processes: readonly ProcessId[]): string => {
    const etcd = processes.map((p) => commandLine(p.pid)).find((c) => /\betcd\b.*--data-dir/.test(c))!;
    return dirname(/--data-dir (\S+)/.exec(etcd)![1]!);
  };
  // Run from the sources, `up` may have tsx's esbuild service below it (started when a module is first loaded late,
  // e.g. the certificate authority): the loader's, not one of ours, so not counted here; it is still among the
  // processes that must be gone after a kill -9 (it exits when its parent's pipe closes).
  const kinds = (processes: readonly ProcessId[]): string[] =>
    processes
      .map((p) => commandLine(p.pid))
      .filter((c) => !/\besbuild --service=/.test(c))
      .map((c) => (/\betcd --name/.test(c) ? 'etcd' : c.includes('expert-shard') ? 'shard' : / serve /.test(c) ? 'router' : 'other'))
      .sort();
  /**
   * The processes below `pid` once they are exactly `expected` by kind. Polled: on a busy machine a
   * child may be between fork and exec (still showing its parent's command line) for a moment.
   */
  const settledChildren = async (pid: number, expected: readonly string[], timeoutMs = 30_000): Promise<ProcessId[]> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const children = descendants(pid);
      if (JSON.stringify(kinds(children)) === JSON.stringify(expected)) return children;
      if (Date.now() > deadline) throw new Error(`children of ${pid} are not ${expected.join(', ')}:\n${children.map((p) => `${p.pid}: ${commandLine(p.pid)}`).join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  beforeAll(async () => {
    dir = await tempDir('orphans');
    demo = `${dir.path}/demo`;
    await makeCheckpoint({ preset: 'demo', outDir: demo, seed: 5 });
  });
  afterAll(async () => {
    // Whatever a failed test left behind goes too (only those very processes, never a reused pid).
    for (const p of seen.values()) killIfAlive(p);
    for (const c of spawned) if (c.exitCode === null) c.kill('SIGKILL');
    await dir?.remove();
  });

  it('kill -9 of `up`: etcd, the shards and the router exit by themselves; the next etcd start removes the orphaned folder', async () => {
    const up = run(['up', '--model', demo, '--shards', '2', '--port', '0']);
    await up.waitFor(/"event":"ready"/);
    const children = await settledChildren(up.child.pid!, ['etcd', 'router', 'shard', 'shard']);
    const folder = etcdFolderOf(children);
    up.child.kill('SIGKILL');
    expect(await waitUntilGone(children, 30_000)).toEqual([]);
    expect(existsSync(folder)).toBe(true); // nobody was left to remove it…
    const next = await EtcdProcess.start();
    await next.stop();
    expect(existsSync(folder)).toBe(false); // …until the next local etcd started
  });

  it('kill -9 of `serve --shards 2`: its shards exit by themselves', async () => {
    const serve = run(['serve', '--model', demo, '--shards', '2', '--port', '0']);
    await serve.waitFor(/"event":"listening"/);
    const children = await settledChildren(serve.child.pid!, ['shard', 'shard']);
    serve.child.kill('SIGKILL');
    expect(await waitUntilGone(children, 30_000)).toEqual([]);
  });

  for (const when of [/\[up\] registry: etcd at/, /\[up\] 2 shards:/]) {
    it(`SIGTERM to \`up\` before it is ready (at "${when.source.replace(/\\/g, '')}"): it stops everything it started and removes etcd's folder`, async () => {
      const up = run(['up', '--model', demo, '--shards', '2', '--port', '0']);
      await up.waitFor(when);
      const folder = etcdFolderOf(descendants(up.child.pid!));
      up.child.kill('SIGTERM');
      expect(await up.exited).toBe(0);
      expect(up.lines.some((l) => l.includes('"event":"ready"'))).toBe(false);
      expect(await waitUntilGone(up.started(), 30_000)).toEqual([]);
      expect(existsSync(folder)).toBe(false);
    });
  }

  it("a router that cannot bind its port stops `up` with the router's error, and nothing is left running", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      const up = run(['up', '--model', demo, '--shards', '2', '--port', String(port)]);
      await up.waitFor(/\[up\] registry: etcd at/);
      const folder = etcdFolderOf(descendants(up.child.pid!));
      expect(await up.exited).toBe(1);
      const errorLine = up.lines.find((l) => l.startsWith('expertmesh up:'));
      expect(errorLine).toMatch(/router exited .*EADDRINUSE/);
      expect(await waitUntilGone(up.started(), 30_000)).toEqual([]);
      expect(existsSync(folder)).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('SIGTERM to `up` while its etcd is unreachable (stopped): the shards and the router still exit within the bound', async () => {
    const up = run(['up', '--model', demo, '--shards', '2', '--port', '0']);
    await up.waitFor(/"event":"ready"/);
    const children = descendants(up.child.pid!);
    const etcd = children.find((p) => /\betcd --name/.test(commandLine(p.pid)))!;
    process.kill(etcd.pid, 'SIGSTOP'); // connections hang rather than fail
    try {
      up.child.kill('SIGTERM');
      // Bounded: 3 s per registry step in each shard, 20 s per stop at most in `up`.
      const code = await Promise.race([up.exited, new Promise((r) => setTimeout(() => r('still running after 40 s'), 40_000))]);
      expect(code).toBe(0);
      expect(await waitUntilGone(children, 10_000)).toEqual([]);
    } finally {
      killIfAlive(etcd);
    }
  });
});
