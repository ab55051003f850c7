import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive, spawnTied } from '@expertmesh/process-lifecycle';

/** Local etcd folders are named so, in the system's temp folder; each holds `owner.pid` and etcd's `data`. */
const FOLDER_PREFIX = 'expertmesh-etcd-';

/** `n` distinct free loopback ports: all are held open until every one is chosen, so none repeats. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.listen(0, '127.0.0.1', () => resolve(s));
          s.on('error', reject);
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Whether an `etcd` binary is on the PATH. */
export function etcdInstalled(): boolean {
  return spawnSync('etcd', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** PEM file paths. */
interface PemFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export interface EtcdProcessOptions {
  /**
   * Serve clients over TLS with this certificate, and require client certificates of `server.ca`
   * (--client-cert-auth). `probe` is a client certificate of that CA for the health checks.
   */
  readonly tls?: { readonly server: PemFiles; readonly probe: PemFiles };
  /** Stops the start (etcd killed, folder removed) when aborted. */
  readonly signal?: AbortSignal;
  /** An address of this machine etcd also serves clients on (e.g. the host end of a veth pair), besides 127.0.0.1. */
  readonly alsoListenOn?: string;
}

/**
 * A single-member etcd on free loopback ports with its own data folder (local clusters and tests).
 * It dies with the process that started it (parent-death signal), and a folder whose owner died
 * without removing it is removed by the next start.
 */
export class EtcdProcess {
  private child: ChildProcess | null = null;

  private constructor(
    readonly clientPort: number,
    private readonly peerPort: number,
    private readonly folder: string,
    private readonly options: EtcdProcessOptions,
  ) {}

  get url(): string {
    return `${this.options.tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
  }

  /** The client URL on the extra address, when one was given. */
  get alsoUrl(): string | null {
    return this.options.alsoListenOn ? `${this.options.tls ? 'https' : 'http'}://${this.options.alsoListenOn}:${this.clientPort}` : null;
  }

  static async start(options: EtcdProcessOptions = {}): Promise<EtcdProcess> {
    await removeOrphanedFolders();
    // A port taken between choosing it and etcd binding it (another process starting) makes etcd exit: try again.
    for (let attempt = 1; ; attempt++) {
      const [client, peer] = await freePorts(2);
      const folder = await mkdtemp(join(tmpdir(), FOLDER_PREFIX));
      await writeFile(join(folder, 'owner.pid'), String(process.pid));
      const etcd = new EtcdProcess(client!, peer!, folder, options);
      try {
        await etcd.run();
        return etcd;
      } catch (e) {
        await etcd.stop();
        if (attempt >= 3 || options.signal?.aborted) throw e;
      }
    }
  }

  /** Starts (or restarts, keeping its data) the etcd process and waits until it answers. */
  async run(): Promise<void> {
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const clientUrls = [this.url, ...(this.alsoUrl ? [this.alsoUrl] : [])].join(',');
    const data = join(this.folder, 'data');
    await mkdir(data, { recursive: true });
    // prettier-ignore
    const args = [
      '--name', 'expertmesh', '--data-dir', data,
      '--listen-client-urls', clientUrls, '--advertise-client-urls', clientUrls,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `expertmesh=${peer}`, '--log-level', 'error',
    ];
    const tls = this.options.tls;
    if (tls) args.push('--cert-file', tls.server.cert, '--key-file', tls.server.key, '--client-cert-auth', '--trusted-ca-file', tls.server.ca);
    const child = spawnTied('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.options.signal?.aborted) throw new Error('etcd start aborted: the process is stopping');
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}) while starting: ${stderr.trim()}`);
      try {
        if (await this.healthy()) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`etcd did not answer within 20 s (is etcd-server installed? apt-get install -y etcd-server): ${stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async healthy(): Promise<boolean> {
    const tls = this.options.tls;
    if (!tls) return (await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) })).ok;
    const [ca, cert, key] = await Promise.all([tls.probe.ca, tls.probe.cert, tls.probe.key].map((f) => readFile(f)));
    return new Promise((resolve, reject) => {
      const req = request(`${this.url}/health`, { ca, cert, key, timeout: 2000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end();
    });
  }

  /** Sends a signal to etcd (SIGSTOP makes it unreachable without closing connections, as a hung host would). */
  signal(signal: NodeJS.Signals): void {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
  }

  /** Kills the process (as a crash would), keeping the data folder for run(). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  async stop(): Promise<void> {
    await this.kill();
    await rm(this.folder, { recursive: true, force: true });
  }
}

/** Removes local etcd folders whose owner process is gone (it was killed before it could). */
async function removeOrphanedFolders(): Promise<void> {
  const entries = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of entries.filter((n) => n.startsWith(FOLDER_PREFIX))) {
    const folder = join(tmpdir(), name);
    const owner = Number(await readFile(join(folder, 'owner.pid'), 'utf8').catch(() => ''));
    if (!Number.isInteger(owner) || owner <= 0 || processAlive(owner)) continue;
    await rm(folder, { recursive: true, force: true }).catch(() => undefined);
  }
}
