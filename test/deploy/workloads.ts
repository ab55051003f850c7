import type { K8sObject } from './kustomize.js';

/** The parts of a pod spec the deployment tests read. */
export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
}
export interface Probe {
  readonly httpGet?: { readonly path: string; readonly port: number | string };
  readonly grpc?: { readonly port: number; readonly service?: string };
  readonly periodSeconds?: number;
  readonly failureThreshold?: number;
}
export interface EnvVar {
  readonly name: string;
  readonly value?: string;
  readonly valueFrom?: {
    readonly fieldRef?: { readonly fieldPath: string };
    readonly secretKeyRef?: { readonly name: string; readonly key: string };
    readonly configMapKeyRef?: { readonly name: string; readonly key: string };
  };
}
export interface Container {
  readonly name: string;
  readonly image: string;
  readonly command?: readonly string[];
  readonly args?: readonly string[];
  readonly env?: readonly EnvVar[];
  readonly envFrom?: readonly { readonly configMapRef?: { readonly name: string }; readonly secretRef?: { readonly name: string } }[];
  readonly ports?: readonly ContainerPort[];
  readonly startupProbe?: Probe;
  readonly readinessProbe?: Probe;
  readonly livenessProbe?: Probe;
  readonly resources?: { readonly requests?: Record<string, string | number>; readonly limits?: Record<string, string | number> };
  readonly volumeMounts?: readonly { readonly name: string; readonly mountPath: string; readonly readOnly?: boolean; readonly subPath?: string }[];
}
export interface Volume {
  readonly name: string;
  readonly secret?: { readonly secretName: string };
  readonly configMap?: { readonly name: string };
  readonly persistentVolumeClaim?: { readonly claimName: string; readonly readOnly?: boolean };
  readonly emptyDir?: object;
}
export interface PodSpec {
  readonly containers: readonly Container[];
  readonly initContainers?: readonly Container[];
  readonly volumes?: readonly Volume[];
  readonly terminationGracePeriodSeconds?: number;
  readonly securityContext?: { readonly runAsNonRoot?: boolean; readonly runAsUser?: number };
}
export interface Workload {
  readonly object: K8sObject;
  readonly labels: Record<string, string>;
  readonly spec: PodSpec;
  readonly replicas: number;
}

const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'Job']);

/** Deployments, StatefulSets and Jobs with their pod templates. */
export function workloads(objects: readonly K8sObject[]): Workload[] {
  return objects
    .filter((o) => WORKLOAD_KINDS.has(o.kind))
    .map((o) => {
      const spec = o.spec as { replicas?: number; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
      return { object: o, labels: spec.template.metadata.labels, spec: spec.template.spec, replicas: spec.replicas ?? 1 };
    });
}

export function workload(objects: readonly K8sObject[], kind: string, name: string): Workload {
  const w = workloads(objects).find((x) => x.object.kind === kind && x.object.metadata.name === name);
  if (!w) throw new Error(`no ${kind} ${name}`);
  return w;
}

/** Label-selector match (matchLabels and matchExpressions with In/NotIn/Exists/DoesNotExist). */
export interface LabelSelector {
  readonly matchLabels?: Record<string, string>;
  readonly matchExpressions?: readonly { readonly key: string; readonly operator: string; readonly values?: readonly string[] }[];
}
export function selects(selector: LabelSelector, labels: Record<string, string>): boolean {
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpressions = (selector.matchExpressions ?? []).every((e) => {
    const has = e.key in labels;
    if (e.operator === 'In') return has && (e.values ?? []).includes(labels[e.key]!);
    if (e.operator === 'NotIn') return !has || !(e.values ?? []).includes(labels[e.key]!);
    if (e.operator === 'Exists') return has;
    if (e.operator === 'DoesNotExist') return !has;
    throw new Error(`unknown selector operator ${e.operator}`);
  });
  return byLabels && byExpressions;
}

/** A named or numbered port of a container, as probes, Services and NetworkPolicies give it. */
export function resolvePort(containers: readonly Container[], port: number | string): number | null {
  for (const c of containers)
    for (const p of c.ports ?? []) {
      if (typeof port === 'number' ? p.containerPort === port : p.name === port) return p.containerPort;
    }
  return null;
}

/**
 * The container's environment as the kubelet builds it: envFrom ConfigMaps and Secrets, then env
 * entries in order, each expanding $(NAME) of those before it. `pod` gives the downward API fields.
 */
export function containerEnv(
  objects: readonly K8sObject[],
  c: Container,
  pod: { readonly name: string; readonly namespace: string },
): Record<string, string> {
  const env: Record<string, string> = {};
  const dataOf = (kind: 'ConfigMap' | 'Secret', name: string): Record<string, string> => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`${c.name} refers to ${kind} ${name}, which the manifests do not define`);
    const data = (o.data ?? {}) as Record<string, string>;
    return kind === 'Secret' ? Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')])) : data;
  };
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef) Object.assign(env, dataOf('ConfigMap', from.configMapRef.name));
    if (from.secretRef) Object.assign(env, dataOf('Secret', from.secretRef.name));
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.fieldRef) {
      const field = e.valueFrom.fieldRef.fieldPath;
      if (field === 'metadata.name') env[e.name] = pod.name;
      else if (field === 'metadata.namespace') env[e.name] = pod.namespace;
      else throw new Error(`${c.name}: downward API field ${field} is not modelled by the test`);
    } else if (e.valueFrom?.secretKeyRef) {
      const v = dataOf('Secret', e.valueFrom.secretKeyRef.name)[e.valueFrom.secretKeyRef.key];
      if (v === undefined) throw new Error(`${c.name}: Secret ${e.valueFrom.secretKeyRef.name} has no key ${e.valueFrom.secretKeyRef.key}`);
      env[e.name] = v;
    } else if (e.valueFrom?.configMapKeyRef) {
      const v = dataOf('ConfigMap', e.valueFrom.configMapKeyRef.name)[e.valueFrom.configMapKeyRef.key];
      if (v === undefined) throw new Error(`${c.name}: ConfigMap ${e.valueFrom.configMapKeyRef.name} has no key ${e.valueFrom.configMapKeyRef.key}`);
      env[e.name] = v;
    }
  }
  return env;
}

/** Kubernetes' $(NAME) expansion; an unknown name is an error here (the kubelet would leave it verbatim). */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined) throw new Error(`$(${name}) in "${text}" is not defined for the container`);
    return v;
  });
}

/** The value of a `--flag=value` or `--flag value` argument. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i]!.startsWith(`${flag}=`)) return args[i]!.slice(flag.length + 1);
  }
  return undefined;
}

/** The port of HOST:PORT, or of a URL's authority. */
export function portOf(address: string): number {
  const m = /:(\d+)\/?$/.exec(address);
  if (!m) throw new Error(`no port in ${address}`);
  return Number(m[1]);
}
