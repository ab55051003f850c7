import { spawn, type StdioOptions } from 'node:child_process';
import { join } from 'node:path';

/**
 * stdin ignored, stdout and stderr piped, and an IPC channel: the product's processes call exitWithParent(), so one a
 * test started drains and exits when the test's worker dies (a timeout, kill -9) before its afterAll could stop it.
 * Unref the child's channel: it is only a lifeline.
 */
export const TIED_TO_TEST: StdioOptions = ['ignore', 'pipe', 'pipe', 'ipc'];

export const CLI = join(import.meta.dirname, '..', '..', 'packages', 'cli', 'bin', 'expertmesh.mjs');

/** Runs `expertmesh …` as its own process and collects its output. */
export function runCli(args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: TIED_TO_TEST, env: { ...process.env, ...options.env } });
    child.channel?.unref();
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
