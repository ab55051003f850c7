import * as k8sClient from '@kubernetes/client-node';
import type { K8sObject } from './kustomize.js';

/** An object that validates itself against its JSON schema (kubernetes-models), throwing on the first problem. */
type ValidatingModel = new (data: object) => { validate(): void };

/**
 * Validates one object against the Kubernetes OpenAPI schemas as kubernetes-models compiles them (types,
 * required fields, enums, formats), then checks that no field is unknown (typos such as `readinesProbe`),
 * which the OpenAPI schemas allow but a strict apply refuses: field names come from the Kubernetes client's
 * models, generated from the same OpenAPI document.
 */
export async function schemaProblems(o: K8sObject): Promise<string[]> {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  const specifier = `kubernetes-models/${group ? `${group}/` : ''}${version}`;
  const module = (await import(/* @vite-ignore */ specifier)) as Record<string, ValidatingModel | undefined>;
  const Model = module[o.kind];
  if (!Model) return [`${o.apiVersion} ${o.kind} is not a Kubernetes type`];
  const problems: string[] = [];
  // kustomize wraps a Secret's base64 at 76 columns; the API server's decoder skips the line breaks.
  const data = o.kind === 'Secret' && o.data ? Object.fromEntries(Object.entries(o.data as Record<string, string>).map(([k, v]) => [k, v.replace(/\s+/g, '')])) : undefined;
  try {
    new Model(data ? { ...o, data } : o).validate();
  } catch (e) {
    problems.push((e as Error).message);
  }
  unknownFields(o, `${version!.toUpperCase().slice(0, 1)}${version!.slice(1)}${o.kind}`, '', problems);
  return problems;
}

interface AttributeType {
  readonly baseName: string;
  readonly type: string;
}
type ClientModel = { getAttributeTypeMap(): AttributeType[] };

function clientModel(name: string): ClientModel | null {
  const m = (k8sClient as unknown as Record<string, unknown>)[name] as Partial<ClientModel> | undefined;
  return m && typeof m.getAttributeTypeMap === 'function' ? (m as ClientModel) : null;
}

function unknownFields(value: unknown, type: string, path: string, problems: string[]): void {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`, problems));
    return;
  }
  const model = clientModel(type);
  if (!model || value === null || typeof value !== 'object') return;
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [key, v] of Object.entries(value)) {
    const t = fields.get(key);
    if (t === undefined) problems.push(`${path}.${key}: unknown field of ${type}`);
    else unknownFields(v, t, `${path}.${key}`, problems);
  }
}
