import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { find, KUBERNETES_DIR, kustomizeVersion, OVERLAYS, renderOverlay, type K8sObject, type Overlay, type Rendered } from './kustomize.js';
import { schemaProblems } from './schema-check.js';
import { containerEnv, expand, flagValue, portOf, resolvePort, selects, workload, workloads, type LabelSelector, type Workload } from './workloads.js';

/**
 * The Kubernetes manifests as an operator applies them: every overlay renders with kustomize, every object
 * validates against the Kubernetes OpenAPI schemas with no unknown field, and the objects refer to each other
 * correctly (selectors, ports, flags, Secrets, ConfigMaps, volumes).
 */
describe('Kubernetes manifests', () => {
  it('kubectl renders with kustomize v5', () => {
    expect(Number(/^v(\d+)/.exec(kustomizeVersion())![1])).toBeGreaterThanOrEqual(5);
  });

  describe.each(Object.keys(OVERLAYS) as Overlay[])('overlay %s', (overlay) => {
    let r: Rendered;
    let objects: readonly K8sObject[];
    beforeAll(async () => {
      r = await renderOverlay(overlay);
      objects = r.objects;
    });
    afterAll(async () => r?.remove());

    it('validates every object against the Kubernetes OpenAPI schemas, with no unknown field', async () => {
      expect(objects.length).toBeGreaterThan(15);
      for (const o of objects) expect({ object: `${o.kind}/${o.metadata.name}`, problems: await schemaProblems(o) }).toEqual({ object: `${o.kind}/${o.metadata.name}`, problems: [] });
      expect(new Set(objects.map((o) => o.metadata.namespace ?? (o.kind === 'Namespace' ? o.metadata.name : '')))).toEqual(new Set([OVERLAYS[overlay]]));
    });

    it('has etcd (3 members), shards (a StatefulSet whose pod name is the plan slot), routers behind a Service and the plan Job', () => {
      const etcd = workload(objects, 'StatefulSet', 'etcd');
      expect(etcd.replicas).toBe(3);
      const shard = workload(objects, 'StatefulSet', 'shard');
      const args = shard.spec.containers[0]!.args!;
      expect(args[0]).toBe('shard');
      // Pod shard-N claims slot shard-N, which `expertmesh plan --shards N` names so.
      expect(flagValue(args, '--slot')).toBe('$(POD_NAME)');
      expect(shard.spec.containers[0]!.env!.find((e) => e.name === 'POD_NAME')!.valueFrom!.fieldRef!.fieldPath).toBe('metadata.name');
      expect((shard.object.spec as { serviceName: string }).serviceName).toBe('shard');
      const config = find(objects, 'ConfigMap', 'expertmesh-config').data as Record<string, string>;
      expect(Number(config.EXPERTMESH_SHARDS)).toBe(shard.replicas);
      const plan = workload(objects, 'Job', 'plan');
      expect(plan.spec.containers[0]!.args).toEqual(expect.arrayContaining(['plan', '--shards=$(EXPERTMESH_SHARDS)', '--store', '--if-absent']));
      const router = workload(objects, 'Deployment', 'router');
      expect(router.spec.containers[0]!.args![0]).toBe('serve');
      const routerService = find(objects, 'Service', 'router').spec as { selector: Record<string, string> };
      expect(selects({ matchLabels: routerService.selector }, router.labels)).toBe(true);
    });

    it('probes: HTTP /ready and /health on routers, gRPC health on shards, on ports the containers open', () => {
      const router = workload(objects, 'Deployment', 'router').spec.containers[0]!;
      expect(router.readinessProbe!.httpGet!.path).toBe('/ready');
      expect(router.livenessProbe!.httpGet!.path).toBe('/health');
      expect(router.startupProbe!.httpGet!.path).toBe('/health');
      const shard = workload(objects, 'StatefulSet', 'shard').spec.containers[0]!;
      expect(shard.readinessProbe!.grpc).toEqual({ port: 50052, service: 'expertmesh.v1.ExpertShardService' });
      expect(shard.livenessProbe!.grpc!.port).toBe(50052);
      expect(portOf(flagValue(shard.args!, '--health-listen')!)).toBe(shard.readinessProbe!.grpc!.port);
      for (const w of workloads(objects))
        for (const c of w.spec.containers)
          for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe].filter((p) => p !== undefined)) {
            const port = probe.httpGet?.port ?? probe.grpc?.port;
            expect({ container: c.name, port: resolvePort([c], port!) }).not.toEqual({ container: c.name, port: null });
          }
    });

    it('gives drains their time, budgets disruptions, sizes every container and runs nothing as root', () => {
      // The router's grace covers its preStop pause and its drain, with room to stop after.
      const router = workload(objects, 'Deployment', 'router').spec;
      const preStop = Number((router.containers[0] as unknown as { lifecycle: { preStop: { exec: { command: string[] } } } }).lifecycle.preStop.exec.command[1]);
      const drain = Number(flagValue(router.containers[0]!.args!, '--drain-seconds'));
      expect(preStop + drain + 5).toBeLessThanOrEqual(router.terminationGracePeriodSeconds!);
      expect(drain).toBeGreaterThanOrEqual(60);
      expect(workload(objects, 'StatefulSet', 'shard').spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
      const budgets = objects.filter((o) => o.kind === 'PodDisruptionBudget');
      for (const name of ['etcd', 'shard', 'router']) {
        const w = workloads(objects).find((x) => x.object.metadata.name === name)!;
        const matching = budgets.filter((b) => selects((b.spec as { selector: LabelSelector }).selector, w.labels));
        expect({ name, budgets: matching.length }).toEqual({ name, budgets: 1 });
      }
      for (const w of workloads(objects)) {
        expect(w.spec.securityContext?.runAsNonRoot).toBe(true);
        for (const c of [...w.spec.containers, ...(w.spec.initContainers ?? [])]) {
          expect({ container: c.name, requests: Boolean(c.resources?.requests?.cpu && c.resources.requests.memory), memoryLimit: Boolean(c.resources?.limits?.memory) }).toEqual({ container: c.name, requests: true, memoryLimit: true });
        }
      }
      const gpus = (w: Workload): unknown => w.spec.containers[0]!.resources?.limits?.['nvidia.com/gpu'];
      if (overlay === 'gpu-r1') {
        expect(gpus(workload(objects, 'StatefulSet', 'shard'))).toBe(1);
        expect(gpus(workload(objects, 'Deployment', 'router'))).toBe(1);
        expect(find(objects, 'ConfigMap', 'expertmesh-config').data).toMatchObject({ EXPERTMESH_EXECUTION_PROVIDER: 'cuda' });
      } else {
        expect(gpus(workload(objects, 'StatefulSet', 'shard'))).toBeUndefined();
      }
    });

    it('reads weights from a read-only volume', () => {
      for (const name of ['shard', 'router', 'plan']) {
        const w = workloads(objects).find((x) => x.object.metadata.name === name)!;
        const mount = w.spec.containers[0]!.volumeMounts!.find((m) => m.mountPath === '/models')!;
        expect({ name, readOnly: mount.readOnly }).toEqual({ name, readOnly: true });
        const volume = w.spec.volumes!.find((v) => v.name === mount.name)!;
        if (overlay === 'gpu-r1') {
          expect(volume.persistentVolumeClaim).toEqual({ claimName: 'expertmesh-weights', readOnly: true });
          expect((find(objects, 'PersistentVolumeClaim', 'expertmesh-weights').spec as { accessModes: string[] }).accessModes).toEqual(['ReadOnlyMany']);
        } else {
          // The demo checkpoint is written by an init container, then mounted read-only.
          expect(volume.emptyDir).toBeDefined();
          expect(w.spec.initContainers![0]!.args).toEqual(['init-model', '--preset=demo', '--out=/models/demo', '--if-missing']);
        }
      }
    });

    it('Services select the pods they name and target ports those pods open', () => {
      for (const svc of objects.filter((o) => o.kind === 'Service')) {
        const spec = svc.spec as { selector: Record<string, string>; ports: { name: string; port: number; targetPort: number | string }[] };
        const selected = workloads(objects).filter((w) => selects({ matchLabels: spec.selector }, w.labels));
        expect({ service: svc.metadata.name, workloads: selected.map((w) => w.object.metadata.name) }).toEqual({ service: svc.metadata.name, workloads: [svc.metadata.name] });
        for (const p of spec.ports) expect({ service: svc.metadata.name, port: p.name, resolves: resolvePort(selected[0]!.spec.containers, p.targetPort) }).toEqual({ service: svc.metadata.name, port: p.name, resolves: p.port });
      }
      const shards = workload(objects, 'StatefulSet', 'shard');
      expect((shards.object.spec as { serviceName: string }).serviceName).toBe('shard');
    });

    it('container ports are the ones the flags listen on, and scrape annotations name them', () => {
      const listens = (w: Workload): number[] => {
        const args = w.spec.containers[0]!.args!;
        if (w.object.metadata.name === 'etcd') return ['--listen-client-urls', '--listen-peer-urls', '--listen-metrics-urls'].map((f) => portOf(flagValue(args, f)!));
        if (args[0] === 'serve') return [Number(flagValue(args, '--port'))];
        return ['--listen', '--health-listen', '--metrics-listen'].map((f) => portOf(flagValue(args, f)!));
      };
      for (const name of ['etcd', 'shard', 'router']) {
        const w = workloads(objects).find((x) => x.object.metadata.name === name)!;
        expect({ name, ports: w.spec.containers[0]!.ports!.map((p) => p.containerPort) }).toEqual({ name, ports: listens(w) });
        const annotations = (w.object.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations;
        expect(annotations['prometheus.io/scrape']).toBe('true');
        expect(resolvePort(w.spec.containers, Number(annotations['prometheus.io/port']))).not.toBeNull();
      }
      // Shards advertise the name their headless Service gives the pod, on the port they listen on.
      const shard = workload(objects, 'StatefulSet', 'shard').spec.containers[0]!;
      expect(flagValue(shard.args!, '--advertise')).toBe(`$(POD_NAME).shard.$(POD_NAMESPACE).svc:${portOf(flagValue(shard.args!, '--listen')!)}`);
    });

    it('every $(VAR), ConfigMap, Secret and volume a pod uses is defined', () => {
      for (const w of workloads(objects)) {
        const pod = { name: `${w.object.metadata.name}-0`, namespace: OVERLAYS[overlay] };
        for (const c of [...w.spec.containers, ...(w.spec.initContainers ?? [])]) {
          const env = containerEnv(objects, c, pod);
          for (const a of c.args ?? []) expect(() => expand(a, env)).not.toThrow();
          for (const m of c.volumeMounts ?? []) expect({ container: c.name, volume: m.name, defined: w.spec.volumes!.some((v) => v.name === m.name) || Boolean((w.object.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] }).volumeClaimTemplates?.some((t) => t.metadata.name === m.name)) }).toEqual({ container: c.name, volume: m.name, defined: true });
        }
        for (const v of w.spec.volumes ?? []) {
          if (v.secret) expect(objects.some((o) => o.kind === 'Secret' && o.metadata.name === v.secret!.secretName)).toBe(true);
          if (v.configMap) expect(objects.some((o) => o.kind === 'ConfigMap' && o.metadata.name === v.configMap!.name)).toBe(true);
          if (v.persistentVolumeClaim) expect(objects.some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === v.persistentVolumeClaim!.claimName)).toBe(true);
        }
      }
      // Each role sees its own certificate and key only.
      const secretOf = (name: string): string => workloads(objects).find((x) => x.object.metadata.name === name)!.spec.volumes!.find((v) => v.name === 'tls')!.secret!.secretName;
      expect(secretOf('etcd')).toMatch(/^expertmesh-etcd-tls-/);
      expect(secretOf('shard')).toMatch(/^expertmesh-shard-tls-/);
      expect(secretOf('router')).toMatch(/^expertmesh-router-tls-/);
    });

    it('network policies: only routers reach shards, only cluster members reach etcd, everything else is denied', () => {
      const policies = objects.filter((o) => o.kind === 'NetworkPolicy').map((o) => o.spec as { podSelector: LabelSelector; ingress?: { from?: { podSelector?: LabelSelector; namespaceSelector?: LabelSelector }[]; ports?: { port: number | string }[] }[] });
      const all = workloads(objects);
      // Which workloads may open a connection to `target` on `port`, by the policies selecting it.
      const allowedFrom = (target: Workload, port: number): string[] => {
        const rules = policies.filter((p) => selects(p.podSelector, target.labels)).flatMap((p) => p.ingress ?? []);
        return all
          .filter((src) => rules.some((rule) => (rule.ports ?? []).some((p) => resolvePort(target.spec.containers, p.port) === port) && (rule.from === undefined || rule.from.some((f) => f.podSelector && !f.namespaceSelector && selects(f.podSelector, src.labels)))))
          .map((w) => w.object.metadata.name)
          .sort();
      };
      expect(policies.some((p) => Object.keys(p.podSelector.matchLabels ?? {}).length <= 2 && !p.podSelector.matchExpressions && !p.ingress)).toBe(true);
      expect(allowedFrom(workload(objects, 'StatefulSet', 'shard'), 50051)).toEqual(['router']);
      expect(allowedFrom(workload(objects, 'StatefulSet', 'etcd'), 2379)).toEqual(['plan', 'router', 'shard']);
      expect(allowedFrom(workload(objects, 'StatefulSet', 'etcd'), 2380)).toEqual(['etcd']);
      expect(allowedFrom(workload(objects, 'Deployment', 'router'), 8000)).toEqual(all.map((w) => w.object.metadata.name).sort());
    });

    it('ships the Grafana dashboard as a ConfigMap', async () => {
      const dashboard = find(objects, 'ConfigMap', 'expertmesh-grafana-dashboard');
      const json = (dashboard.data as Record<string, string>)['grafana-dashboard.json']!;
      expect(JSON.parse(json)).toEqual(JSON.parse(await readFile(join(KUBERNETES_DIR, 'base', 'grafana-dashboard.json'), 'utf8')));
      expect(dashboard.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    });
  });
});
