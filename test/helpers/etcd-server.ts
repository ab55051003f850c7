import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { tempDir } from './temp-dir.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** A real etcd (Debian's etcd-server) on free loopback ports with its own data folder. */
export class EtcdServer {
  private child: ChildProcess | null = null;

  private constructor(
    readonly clientPort: number,
    private readonly peerPort: number,
    private readonly dataDir: { path: string; remove: () => Promise<void> },
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.clientPort}`;
  }

  static async start(): Promise<EtcdServer> {
    const server = new EtcdServer(await freePort(), await freePort(), await tempDir('etcd'));
    await server.run();
    return server;
  }

  /** Starts (or restarts, keeping its data) the etcd process and waits until it answers. */
  async run(): Promise<void> {
    const peer = `http://127.0.0.1:${this.peerPort}`;
    this.child = spawn(
      'etcd',
      [
        '--name', 'test',
        '--data-dir', this.dataDir.path,
        '--listen-client-urls', this.url,
        '--advertise-client-urls', this.url,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `test=${peer}`,
        '--log-level', 'error',
      ],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const r = await fetch(`${this.url}/health`);
        if (r.ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error('etcd did not start within 20 s (is etcd-server installed?)');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  async stop(): Promise<void> {
    await this.kill();
    await this.dataDir.remove();
  }
}
