import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI } from '../helpers/cli.js';
import type { K8sObject } from './kustomize.js';
import { containerEnv, expand, type Container, type Workload } from './workloads.js';

/**
 * Runs the containers of rendered manifests as processes on this machine, with their rendered flags, the way a
 * kubelet would run them in pods:
 * - each pod has an address of its own (a loopback address, 127.B.0.N): a listen address of 0.0.0.0 (all of the
 *   pod's interfaces) becomes the pod's address, the port stays as rendered;
 * - the cluster's DNS names (pod.service.namespace.svc, service.namespace.svc) resolve through a hosts file
 *   bind-mounted over /etc/hosts in the process's own mount namespace (unshare), so TLS names are checked as
 *   they would be in the cluster;
 * - volume mounts become folders: Secrets are written from the rendered Secret objects, mount paths in the
 *   arguments are mapped onto those folders;
 * - the image's entrypoint (expertmesh) is this repository's CLI; etcd's is the etcd on PATH.
 */
export interface PodProcess {
  readonly name: string;
  readonly address: string;
  readonly child: ChildProcess;
  readonly log: () => string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
}

export class PodRunner {
  private readonly hosts: string[] = ['127.0.0.1 localhost'];
  private readonly addresses = new Map<string, string>();
  private readonly running: PodProcess[] = [];
  private nextHost = 2;
  private readonly prefix = `127.${100 + Math.floor(Math.random() * 150)}.0`;

  constructor(
    private readonly objects: readonly K8sObject[],
    private readonly namespace: string,
    private readonly dir: string,
    /** Folders standing for volumes other than Secrets, by volume name (e.g. weights → the demo checkpoint folder). */
    private readonly volumeDirs: Record<string, string>,
  ) {}

  /** Gives a pod its address and DNS names: its own (pod.service) and, optionally, its Service's. */
  addPod(pod: string, serviceName: string, opts: { ownsServiceName?: boolean } = {}): string {
    const address = `${this.prefix}.${this.nextHost++}`;
    this.addresses.set(pod, address);
    const svc = `${this.namespace}.svc`;
    const names = [`${pod}.${serviceName}.${svc}`, `${pod}.${serviceName}.${svc}.cluster.local`];
    if (opts.ownsServiceName) names.push(`${serviceName}.${svc}`, `${serviceName}.${svc}.cluster.local`);
    this.hosts.push(`${address} ${names.join(' ')}`);
    return address;
  }

  addressOf(pod: string): string {
    const a = this.addresses.get(pod);
    if (!a) throw new Error(`no pod ${pod}`);
    return a;
  }

  /** The argv a container runs, its flags expanded and mapped onto this machine's pod address and folders. */
  async argv(w: Workload, c: Container, pod: string): Promise<{ argv: string[]; env: Record<string, string>; mounts: Map<string, string> }> {
    const env = containerEnv(this.objects, c, { name: pod, namespace: this.namespace });
    const mounts = await this.mountDirs(w, c, pod);
    const address = this.addressOf(pod);
    const mapArg = (a: string): string => {
      let out = expand(a, env).replaceAll('0.0.0.0', address);
      // Longest mount path first, so /etc/expertmesh/tls wins over a mount at /etc.
      for (const [path, dir] of [...mounts].sort((x, y) => y[0].length - x[0].length)) out = out.split(path).join(dir);
      return out;
    };
    const args = (c.args ?? []).map(mapArg);
    const command = c.command ?? [];
    const repository = c.image.split(':')[0]!.split('/').at(-1);
    const entry = command[0] === '/usr/local/bin/etcd' ? ['etcd', ...command.slice(1).map(mapArg)] : repository === 'expertmesh' && command.length === 0 ? [process.execPath, CLI] : null;
    if (!entry) throw new Error(`the test does not know how to run image ${c.image} (command ${command.join(' ')})`);
    return { argv: [...entry, ...args], env, mounts };
  }

  /** Starts a container's process in the pod's "network" (address and DNS names). */
  async start(w: Workload, c: Container, pod: string): Promise<PodProcess> {
    const { argv, env, mounts } = await this.argv(w, c, pod);
    const hostsFile = join(this.dir, 'hosts');
    await writeFile(hostsFile, `${this.hosts.join('\n')}\n`);
    const cwd = join(this.dir, 'home', pod, c.name);
    await mkdir(cwd, { recursive: true });
    // Mounts the container has read-only are read-only for the process too (a bind mount remounted ro).
    const readOnly = (c.volumeMounts ?? []).filter((m) => m.readOnly && mounts.has(m.mountPath)).map((m) => mounts.get(m.mountPath)!);
    const prelude = ['mount --bind "$0" /etc/hosts', ...readOnly.map((d) => `mount --bind '${d}' '${d}' && mount -o remount,bind,ro '${d}'`)].join(' && ');
    // The process sees the pod's hosts file in a private mount namespace; its process group is stopped as a whole.
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${prelude} && exec "$@"`, hostsFile, ...argv], {
      cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, ONNXRUNTIME_NODE_INSTALL: 'skip', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let log = '';
    const keep = (d: Buffer): void => void (log = (log + d.toString()).slice(-200_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const p: PodProcess = { name: `${pod}/${c.name}`, address: this.addressOf(pod), child, log: () => log, exited };
    this.running.push(p);
    return p;
  }

  /** SIGTERM to a pod's process group; resolves with how it ended (exit code, or the signal) and the seconds it took. */
  async terminate(p: PodProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; seconds: number }> {
    const started = performance.now();
    if (p.child.exitCode === null && p.child.signalCode === null) process.kill(-p.child.pid!, 'SIGTERM');
    const code = await p.exited;
    return { code, signal: p.child.signalCode, seconds: (performance.now() - started) / 1000 };
  }

  /** Kills whatever still runs (process groups), e.g. after a failed test. */
  async killAll(): Promise<void> {
    for (const p of this.running) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
      try {
        process.kill(-p.child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await p.exited;
    }
  }

  /** Folders for the container's volume mounts: Secrets written out, volume claims and emptyDirs as folders. */
  private async mountDirs(w: Workload, c: Container, pod: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const m of c.volumeMounts ?? []) {
      if (m.mountPath === '/tmp') continue;
      const volume = w.spec.volumes?.find((v) => v.name === m.name);
      let dir: string;
      if (volume?.secret) {
        dir = join(this.dir, 'secrets', pod, m.name);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const secret = this.objects.find((o) => o.kind === 'Secret' && o.metadata.name === volume.secret!.secretName);
        if (!secret) throw new Error(`Secret ${volume.secret.secretName} is not in the manifests`);
        for (const [file, b64] of Object.entries(secret.data as Record<string, string>)) await writeFile(join(dir, file), Buffer.from(b64, 'base64'), { mode: 0o600 });
      } else if (this.volumeDirs[m.name]) {
        dir = this.volumeDirs[m.name]!;
      } else {
        // A volume claim template or emptyDir of this pod.
        dir = join(this.dir, 'volumes', pod, m.name);
        await mkdir(dir, { recursive: true });
      }
      out.set(m.mountPath, dir);
    }
    return out;
  }
}
