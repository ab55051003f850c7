import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { withServingNodeFlags } from '@expertmesh/process-lifecycle';
import { CLI } from './cli.js';
import { spawnTiedToTest } from './tied-to-test.js';

/** `expertmesh serve …` as a process of its own on a free loopback port. */
export async function startServeProcess(
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): Promise<{ url: string; process: ChildProcess; stop: () => Promise<void>; startupMs: Record<string, number>; stderr: () => string }> {
  const child = spawnTiedToTest(process.execPath, withServingNodeFlags([CLI, 'serve', '--host', '127.0.0.1', '--port', '0', ...args]), { env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let startupMs: Record<string, number> = {};
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 120_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { event?: string; url?: string; startup_ms?: Record<string, number> };
      if (m.event === 'listening' && m.url) {
        clearTimeout(timer);
        startupMs = m.startup_ms ?? {};
        resolve(m.url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}: ${stderr}`));
    });
  });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  return { url, process: child, stop, startupMs, stderr: () => stderr };
}

/** Polls GET /health until `check` holds (bounded). */
export async function waitForHealth(url: string, check: (h: { running: number; waiting: number }) => boolean, timeoutMs = 10_000): Promise<{ running: number; waiting: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const h = (await (await fetch(`${url}/health`)).json()) as { running: number; waiting: number };
    if (check(h) || Date.now() > deadline) return h;
    await new Promise((r) => setTimeout(r, 50));
  }
}
