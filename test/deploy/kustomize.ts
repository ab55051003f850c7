import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const REPO = join(import.meta.dirname, '..', '..');
export const KUBERNETES_DIR = join(REPO, 'deploy', 'kubernetes');
/** kubectl with kustomize v5 (KUBECTL, or the one on PATH; .ci/run provides one). */
export const KUBECTL = process.env.KUBECTL ?? 'kubectl';

/** A Kubernetes object as rendered: only the fields every object has are typed. */
export interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly [field: string]: unknown;
}

export const OVERLAYS = { 'cpu-demo': 'expertmesh-demo', 'gpu-r1': 'expertmesh' } as const;
export type Overlay = keyof typeof OVERLAYS;

function run(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  if (r.error) throw new Error(`${cmd} could not run (${r.error.message}): install kubectl ≥ 1.27 (kustomize v5) or set KUBECTL`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

/** The kustomize version kubectl embeds, e.g. "v5.5.0". */
export function kustomizeVersion(): string {
  const m = /Kustomize Version: (v[\d.]+)/.exec(run(KUBECTL, ['version', '--client']));
  if (!m) throw new Error(`${KUBECTL} reports no kustomize version`);
  return m[1]!;
}

export interface Rendered {
  readonly objects: readonly K8sObject[];
  /** The secret files make-secrets.sh wrote for this overlay (ca/, etcd/, router/, shard/, api-keys). */
  readonly secretsDir: string;
  readonly dir: string;
  remove(): Promise<void>;
}

/**
 * Renders an overlay as an operator would: a copy of deploy/kubernetes, its secrets written by
 * make-secrets.sh for the overlay's namespace, then `kubectl kustomize`. Warnings on stderr fail it.
 */
export async function renderOverlay(overlay: Overlay): Promise<Rendered> {
  const dir = await mkdtemp(join(tmpdir(), `expertmesh-k8s-${overlay}-`));
  try {
    await cp(KUBERNETES_DIR, join(dir, 'kubernetes'), { recursive: true, filter: (src) => !src.includes(`${join('overlays', overlay, 'secrets')}`) });
    const secretsDir = join(dir, 'kubernetes', 'overlays', overlay, 'secrets');
    run(join(dir, 'kubernetes', 'make-secrets.sh'), ['--namespace', OVERLAYS[overlay], '--out', secretsDir, '--api-key', `sk-test-${overlay}`]);
    const r = spawnSync(KUBECTL, ['kustomize', join(dir, 'kubernetes', 'overlays', overlay)], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
    if (r.status !== 0 || r.stderr.trim()) throw new Error(`kubectl kustomize ${overlay}: ${r.status}\n${r.stderr}`);
    const objects = parseAllDocuments(r.stdout).map((d) => d.toJSON() as K8sObject);
    return { objects, secretsDir, dir, remove: () => rm(dir, { recursive: true, force: true }) };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The one object of a kind and name (the generated ones carry a hash suffix: give the prefix). */
export function find<T = K8sObject>(objects: readonly K8sObject[], kind: string, name: string): T & K8sObject {
  const hits = objects.filter((o) => o.kind === kind && (o.metadata.name === name || o.metadata.name.startsWith(`${name}-`)));
  if (hits.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${hits.length}`);
  return hits[0] as T & K8sObject;
}
