import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { cliEntry, spawnTied, stopGroup } from '@expertmesh/process-lifecycle';

export class RouterExitError extends Error {
  override readonly name = 'RouterExitError';
}

/**
 * What `serve` may still need after its drain time before it has exited: stopping the router (bounded
 * at 15 s in serve), closing its registry client (3 s), and some slack.
 */
export const ROUTER_STOP_MARGIN_MS = 20_000;

/**
 * `expertmesh serve` as a child of `up`: tied to it (it exits when `up` dies), started again on the
 * same port if it crashes, stopped (drained) by stop(). It is given `--drain-seconds` here, and stop()
 * waits that long plus ROUTER_STOP_MARGIN_MS before a SIGKILL, so the requests it accepted can finish.
 * Its stderr goes to ours, and the tail of it explains a failed start.
 */
export class RouterProcess {
  private child: ChildProcess | null = null;
  private stopping = false;
  private restarts: number[] = [];
  private port: number | null = null;

  constructor(
    private readonly args: (port: number | null) => readonly string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly drainSeconds: number,
    /** The program run with `args` (the expertmesh CLI of the layout this runs from; another only in tests). */
    private readonly entry: string = cliEntry(),
  ) {}

  /** How long stop() waits for the router to exit by itself before it kills it. */
  get stopGraceMs(): number {
    return this.drainSeconds * 1000 + ROUTER_STOP_MARGIN_MS;
  }

  /** Starts the router; resolves with its URL once it listens, rejects with its error if it exits first. */
  start(): Promise<string> {
    const child = spawnTied(process.execPath, [this.entry, ...this.args(this.port), '--drain-seconds', String(this.drainSeconds)], { node: true, env: this.env });
    this.child = child;
    let tail = '';
    child.stderr!.on('data', (d: Buffer) => {
      process.stderr.write(d);
      tail = (tail + d.toString()).slice(-2000);
    });
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        try {
          const m = JSON.parse(line) as { event?: string; url?: string };
          if (m.event === 'listening' && m.url) {
            this.port = Number(new URL(m.url).port);
            resolve(m.url);
          }
        } catch {
          // Not a status line.
        }
      });
      child.once('exit', (code, signal) => reject(new RouterExitError(`the router exited (${signal ?? `code ${code}`}) before listening: ${tail.trim().split('\n').slice(-3).join(' | ')}`)));
    });
  }

  /**
   * Runs until `signal` aborts. A router that exits meanwhile is started again on its port (at most
   * `perMinute` times a minute, else the cluster stops with an error).
   */
  async keepRunning(signal: AbortSignal, log: (message: string) => void, perMinute = 5): Promise<void> {
    for (;;) {
      const child = this.child!;
      const exited = new Promise<string>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve(`${child.signalCode ?? `code ${child.exitCode}`}`);
        else child.once('exit', (code, sig) => resolve(`${sig ?? `code ${code}`}`));
      });
      const aborted = new Promise<null>((resolve) => (signal.aborted ? resolve(null) : signal.addEventListener('abort', () => resolve(null), { once: true })));
      const how = await Promise.race([exited, aborted]);
      if (how === null || this.stopping) return;
      const now = Date.now();
      this.restarts = this.restarts.filter((t) => now - t < 60_000);
      if (this.restarts.length >= perMinute) throw new RouterExitError(`the router exited (${how}) ${perMinute} times within a minute: giving up`);
      this.restarts.push(now);
      log(`the router exited (${how}): starting it again on port ${this.port}`);
      const started = performance.now();
      const url = await this.start();
      log(`the router is back at ${url} after ${Math.round(performance.now() - started)} ms`);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.child) await stopGroup(this.child, this.stopGraceMs);
  }
}
