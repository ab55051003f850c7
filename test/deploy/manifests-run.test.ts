import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { expertmeshV1 } from '@expertmesh/wire';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { find, OVERLAYS, renderOverlay, type Rendered } from './kustomize.js';
import { PodRunner, type PodProcess } from './pods.js';
import { resolvePort, workload, type Probe, type Workload } from './workloads.js';

const NAMESPACE = OVERLAYS['cpu-demo'];

/** Polls until `check` answers true, for at most `seconds` (a busy machine makes everything slower). */
async function until(what: string, check: () => Promise<boolean>, seconds: number, logs: () => string): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not happen within ${seconds} s:\n${logs()}`);
}

const healthClient = (() => {
  const def = protoLoader.loadSync(healthProtoPath, { enums: String });
  return (grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }).grpc.health.v1.Health;
})();

/** What the kubelet's probe would see: HTTP 2xx/3xx on httpGet, SERVING on grpc, at the pod's address. */
async function probe(p: Probe, pod: PodProcess, w: Workload): Promise<boolean> {
  if (p.httpGet) {
    const port = resolvePort(w.spec.containers, p.httpGet.port);
    const r = await fetch(`http://${pod.address}:${port}${p.httpGet.path}`, { signal: AbortSignal.timeout(3000) });
    return r.status >= 200 && r.status < 400;
  }
  const client = new healthClient(`${pod.address}:${p.grpc!.port}`, grpc.credentials.createInsecure());
  try {
    const status = await new Promise<string>((resolve, reject) =>
      (client as unknown as { Check: (req: object, o: object, cb: (e: Error | null, r: { status: string }) => void) => void }).Check({ service: p.grpc!.service ?? '' }, { deadline: Date.now() + 3000 }, (e, r) => (e ? reject(e) : resolve(r.status))),
    );
    return status === 'SERVING';
  } finally {
    client.close();
  }
}

/**
 * The cpu-demo overlay run for real: etcd members, the plan Job, the init containers, the shards and the router
 * are started with their rendered flags (see PodRunner), so the probes, Service ports, certificates (by their
 * in-cluster DNS names), Secrets and flags must all fit together for a chat completion to come back.
 */
describe('the cpu-demo manifests, run as processes', () => {
  let r: Rendered;
  let pods: PodRunner;
  const started: { pod: PodProcess; w: Workload }[] = [];
  const logs = (): string => started.map(({ pod }) => `--- ${pod.name}\n${pod.log().slice(-3000)}`).join('\n');

  beforeAll(async () => {
    r = await renderOverlay('cpu-demo');
    // The weights emptyDir every pod of this "node" shares: the first init container fills it, the others find it full.
    await mkdir(join(r.dir, 'weights'));
    pods = new PodRunner(r.objects, NAMESPACE, r.dir, { weights: join(r.dir, 'weights') });
  });
  afterAll(async () => {
    await pods?.killAll();
    await r?.remove();
  });

  it('starts etcd, stores the plan, serves a chat completion through the router Service, and drains on SIGTERM', async () => {
    const objects = r.objects;
    const etcd = workload(objects, 'StatefulSet', 'etcd');
    const shard = workload(objects, 'StatefulSet', 'shard');
    const router = workload(objects, 'Deployment', 'router');
    const plan = workload(objects, 'Job', 'plan');
    // Pod names as their controllers give them: StatefulSets by ordinal, the others by a generated suffix.
    const etcdPods = Array.from({ length: etcd.replicas }, (_, i) => `etcd-${i}`);
    const shardPods = Array.from({ length: shard.replicas }, (_, i) => `shard-${i}`);
    for (const p of etcdPods) pods.addPod(p, 'etcd');
    for (const p of shardPods) pods.addPod(p, 'shard');
    pods.addPod('router-5d8c7f9b6-x2x9q', 'router', { ownsServiceName: true });
    pods.addPod('plan-7kq2m', 'plan');

    const ready = async (w: Workload, pod: PodProcess, seconds: number): Promise<void> => {
      const c = w.spec.containers[0]!;
      for (const [kind, p] of [['startup', c.startupProbe], ['readiness', c.readinessProbe], ['liveness', c.livenessProbe]] as const) {
        if (p) await until(`${pod.name} passing its ${kind} probe`, () => probe(p, pod, w), seconds, logs);
      }
    };

    // etcd: three members form a cluster over peer TLS, checked by their DNS names.
    for (const p of etcdPods) started.push({ pod: await pods.start(etcd, etcd.spec.containers[0]!, p), w: etcd });
    for (const { pod } of started) await ready(etcd, pod, 60);

    // The init containers write the demo checkpoint into the weights volume (the others find it there).
    for (const [w, p] of [[plan, 'plan-7kq2m'], [router, 'router-5d8c7f9b6-x2x9q'], ...shardPods.map((s) => [shard, s] as const)] as const) {
      const init = await pods.start(w, w.spec.initContainers![0]!, p);
      expect({ init: init.name, code: await init.exited, log: (await init.exited) === 0 ? '' : init.log() }).toEqual({ init: init.name, code: 0, log: '' });
    }

    // The plan Job stores a plan for exactly the shard pods' slots.
    const job = await pods.start(plan, plan.spec.containers[0]!, 'plan-7kq2m');
    expect({ code: await job.exited, log: job.log() }).toMatchObject({ code: 0, log: expect.stringMatching(/stored as plan v1 of cluster demo/) });
    for (const s of shardPods) expect(job.log()).toContain(`| ${s} |`);
    // Applying the manifests again runs the Job again: it leaves the plan alone.
    const again = await pods.start(plan, plan.spec.containers[0]!, 'plan-7kq2m');
    expect({ code: await again.exited, log: again.log() }).toMatchObject({ code: 0, log: expect.stringMatching(/already has plan v1: left as it is/) });

    // Shards: each takes the slot named like its pod and passes the gRPC health probes on its plaintext port.
    const shardProcs: PodProcess[] = [];
    for (const p of shardPods) {
      const proc = await pods.start(shard, shard.spec.containers[0]!, p);
      shardProcs.push(proc);
      started.push({ pod: proc, w: shard });
    }
    for (const proc of shardProcs) await ready(shard, proc, 180);
    for (const [i, proc] of shardProcs.entries()) expect(proc.log()).toContain(`"slot":"${shardPods[i]}"`);
    // The plaintext health port answers health and nothing else.
    const onHealthPort = new (expertmeshV1().ExpertShardService)(`${shardProcs[0]!.address}:${shard.spec.containers[0]!.readinessProbe!.grpc!.port}`, grpc.credentials.createInsecure());
    const refused = await new Promise<grpc.ServiceError | null>((resolve) => onHealthPort.GetShardInfo({}, { deadline: Date.now() + 5000 }, (e) => resolve(e)));
    onHealthPort.close();
    expect(refused?.code).toBe(grpc.status.UNIMPLEMENTED);

    // The router: /health, then /ready once it confirmed both shards over mutual TLS.
    const routerProc = await pods.start(router, router.spec.containers[0]!, 'router-5d8c7f9b6-x2x9q');
    started.push({ pod: routerProc, w: router });
    await ready(router, routerProc, 180);

    // Through the Service: its port, its targetPort on the router pod, the API key from the Secret.
    const svc = find(objects, 'Service', 'router').spec as { ports: { port: number; targetPort: string }[] };
    const port = resolvePort(router.spec.containers, svc.ports[0]!.targetPort);
    expect(port).toBe(svc.ports[0]!.port);
    const apiKey = Buffer.from((find(objects, 'Secret', 'expertmesh-api-keys').data as Record<string, string>)['api-keys']!, 'base64').toString();
    const url = `http://${routerProc.address}:${port}/v1/chat/completions`;
    const body = JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8 });
    expect((await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).status).toBe(401);
    const answer = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` }, body });
    expect(answer.status).toBe(200);
    const completion = (await answer.json()) as { model: string; choices: { message: { role: string } }[]; usage: { completion_tokens: number } };
    expect(completion.model).toBe('demo');
    expect(completion.choices[0]!.message.role).toBe('assistant');
    expect(completion.usage.completion_tokens).toBeGreaterThan(0);

    // Prometheus scrapes what the annotations name, without a key.
    for (const { pod, w } of [{ pod: routerProc, w: router }, { pod: shardProcs[0]!, w: shard }]) {
      const a = (w.object.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations;
      const text = await (await fetch(`http://${pod.address}:${a['prometheus.io/port']}${a['prometheus.io/path']}`)).text();
      expect(text).toMatch(/^# (HELP|TYPE) expertmesh_/m);
    }

    // SIGTERM, as on a pod's deletion: each process ends by itself within its grace period (ours exit 0; etcd
    // stops gracefully and then re-raises the signal, so it ends by SIGTERM, never by the kubelet's SIGKILL).
    for (const { pod, w } of [...started].reverse()) {
      const { code, signal, seconds } = await pods.terminate(pod);
      const ended = w === etcd ? signal ?? `exit ${code}` : `exit ${code}`;
      expect({ pod: pod.name, ended, inGrace: seconds < (w.spec.terminationGracePeriodSeconds ?? 30) }).toEqual({ pod: pod.name, ended: w === etcd ? 'SIGTERM' : 'exit 0', inGrace: true });
    }
  }, 600_000);
});
