import { EtcdProcess, EtcdRegistry, planPlacement } from '@expertmesh/discovery';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { NetworkNamespace } from './netns.js';
import { startServeProcess } from './serve-process.js';
import { startShardProcess, type ShardProcess } from './shard-process.js';

export interface FailoverClusterOptions {
  readonly modelDir: string;
  /** Plan slots, one shard process each. */
  readonly slots: readonly string[];
  /** Extra expert copies per layer in the plan (the number of experts: every expert held twice). */
  readonly redundantExperts: number;
  readonly leaseTtlSeconds: number;
  /** The slot whose shard runs inside this namespace (etcd then also listens on the namespace's host address). */
  readonly netns?: { readonly slot: string; readonly namespace: NetworkNamespace };
  /** Extra `serve` flags. */
  readonly serveArgs?: readonly string[];
}

/**
 * A real cluster for failover tests and benchmarks: an etcd, a placement plan with replicas, one
 * shard process per slot registered under a lease, and a router (`serve`) that follows the registry,
 * float32 on the wire both ways.
 */
export class FailoverCluster {
  readonly shards = new Map<string, ShardProcess>();
  router: Awaited<ReturnType<typeof startServeProcess>> | null = null;

  private constructor(
    readonly options: FailoverClusterOptions,
    readonly etcd: EtcdProcess,
    readonly registry: EtcdRegistry,
  ) {}

  static async start(o: FailoverClusterOptions): Promise<FailoverCluster> {
    const etcd = await EtcdProcess.start(o.netns ? { alsoListenOn: o.netns.namespace.hostAddress } : {});
    const registry = new EtcdRegistry([etcd.url], 'failover');
    const c = new FailoverCluster(o, etcd, registry);
    try {
      const { config, fingerprint } = await readCheckpointIdentity(o.modelDir);
      await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version: 1, slots: o.slots, redundantExperts: o.redundantExperts, bytesPerExpert: 1 }));
      await Promise.all(o.slots.map((s) => c.startShard(s)));
      c.router = await startServeProcess(c.routerArgs());
      await c.untilReady();
      // Ready is not enough: a refused shard (a record the router ignores) silently costs its replicas.
      await c.untilRoutingToAll();
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  /** `serve` flags of the cluster's router (also for starting it again on its port). */
  routerArgs(): string[] {
    const o = this.options;
    // A shard in a namespace is beyond loopback and plaintext: the router must be told to accept it.
    return ['--model', o.modelDir, '--cluster', 'failover', '--etcd', this.etcd.url, '--wire-dtype', 'float32', '--combine-dtype', 'float32', ...(o.netns ? ['--insecure'] : []), ...(o.serveArgs ?? [])];
  }

  get url(): string {
    return this.router!.url;
  }

  /** Starts (or starts again) the shard of a slot and waits until it is registered. */
  async startShard(slot: string): Promise<ShardProcess> {
    const inNamespace = this.options.netns?.slot === slot ? this.options.netns.namespace : null;
    const etcdUrl = inNamespace ? this.etcd.alsoUrl! : this.etcd.url;
    // Inside the namespace the shard binds the veth address, not loopback: plaintext there is the
    // test's choice (the link exists only between this process's namespaces), hence --insecure.
    const shard = await startShardProcess(
      [
        ...['--model', this.options.modelDir, '--cluster', 'failover', '--etcd', etcdUrl, '--slot', slot, '--shard-id', slot],
        ...['--listen', `${inNamespace?.address ?? '127.0.0.1'}:0`, '--lease-ttl', String(this.options.leaseTtlSeconds), ...(inNamespace ? ['--insecure'] : [])],
        // A joining shard (one that has answered no call) sleeps 12× each graph's build time by default, so as to
        // take little CPU from the shards serving beside it: on a busy machine its builds are slow, and it slept
        // tens of seconds (a restarted shard 60 s in CI). Pacing is one-load-per-host's and joining-autogroup's
        // subject; here it only delays the start of the cluster and of a shard brought back.
        ...['--join-load-rest', '0'],
      ],
      inNamespace ? { netns: inNamespace.name } : {},
    );
    this.shards.set(slot, shard);
    return shard;
  }

  /** Waits until the router's /ready says every expert has a holder it can use. */
  async untilReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((await fetch(`${this.url}/ready`).catch(() => null))?.status !== 200) {
      if (Date.now() > deadline) throw new Error(`router not ready within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Waits until the router routes to every shard started (each is in its view, healthy); names the
   * missing ones when it does not (a refused record: see the router's log).
   */
  async untilRoutingToAll(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = (await (await fetch(`${this.url}/dashboard/state`)).json()) as { shards: { address: string; healthy: boolean }[] };
      const missing = [...this.shards].filter(([, s]) => !state.shards.some((h) => h.address === s.address && h.healthy)).map(([slot, s]) => `${slot} (${s.address})`);
      if (missing.length === 0) return;
      if (Date.now() > deadline) throw new Error(`the router does not route to ${missing.join(', ')} within ${timeoutMs} ms: refused or unreachable`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A router metric's samples whose labels include `labels` (summed), from /metrics. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  async stop(): Promise<void> {
    await this.router?.stop();
    await Promise.all([...this.shards.values()].map((s) => s.kill()));
    await this.registry.close();
    await this.etcd.stop();
  }
}
