import { readFile } from 'node:fs/promises';
import type { ClusterRegistry } from './cluster-registry.js';
import { EtcdRegistry, type EtcdSecurity } from './etcd-registry.js';
import { HttpRegistry } from './http-registry.js';

/** How a process reaches its registry, as flags and environment give it. */
export interface RegistryOptions {
  readonly etcd?: string | undefined;
  readonly registry?: string | undefined;
  readonly cluster?: string | undefined;
  /** etcd over TLS (--etcd-ca, and --etcd-cert with --etcd-key for client-certificate auth) and/or etcd users (--etcd-user, EXPERTMESH_ETCD_PASSWORD). */
  readonly etcdSecurity?: EtcdSecurity | undefined;
  /** The embedded registry's bearer token (EXPERTMESH_REGISTRY_TOKEN). */
  readonly registryToken?: string | undefined;
}

export class RegistryConfigError extends Error {
  override readonly name = 'RegistryConfigError';
}

/**
 * The registry a process was told to use: `--etcd URL[,URL]` with `--cluster NAME`, or the embedded
 * registry server's `--registry URL` (one cluster per server). null when neither is given.
 */
export function openRegistry(options: RegistryOptions): ClusterRegistry | null {
  if (options.etcd && options.registry) throw new RegistryConfigError('give --etcd or --registry, not both');
  if (options.registry) {
    if (!options.registryToken) throw new RegistryConfigError('--registry needs its token in EXPERTMESH_REGISTRY_TOKEN (printed by `expertmesh up`)');
    return new HttpRegistry(options.registry, options.registryToken);
  }
  if (options.etcd) {
    if (!options.cluster) throw new RegistryConfigError('--etcd needs --cluster NAME');
    return new EtcdRegistry(options.etcd.split(','), options.cluster, options.etcdSecurity ?? {});
  }
  return null;
}

/** The etcd flags every command that talks to etcd takes (and their environment variables). */
export interface EtcdSecurityFlags {
  readonly 'etcd-ca'?: string | undefined;
  readonly 'etcd-cert'?: string | undefined;
  readonly 'etcd-key'?: string | undefined;
  readonly 'etcd-user'?: string | undefined;
  readonly 'etcd-password-file'?: string | undefined;
}

/** Reads the files the etcd flags name; the password comes from a file or EXPERTMESH_ETCD_PASSWORD, never from the command line. */
export async function etcdSecurityFromFlags(flags: EtcdSecurityFlags, env: NodeJS.ProcessEnv = process.env): Promise<EtcdSecurity> {
  const read = async (path: string, flag: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new RegistryConfigError(`${flag} ${path}: ${(e as Error).message}`);
    }
  };
  if (Boolean(flags['etcd-cert']) !== Boolean(flags['etcd-key'])) throw new RegistryConfigError('--etcd-cert and --etcd-key go together');
  if (flags['etcd-cert'] && !flags['etcd-ca']) throw new RegistryConfigError('--etcd-cert needs --etcd-ca (the CA of the etcd server certificate)');
  const tls = flags['etcd-ca']
    ? {
        ca: await read(flags['etcd-ca'], '--etcd-ca'),
        ...(flags['etcd-cert'] ? { cert: await read(flags['etcd-cert'], '--etcd-cert'), key: await read(flags['etcd-key']!, '--etcd-key') } : {}),
      }
    : undefined;
  let auth;
  if (flags['etcd-user']) {
    const password = flags['etcd-password-file'] ? (await read(flags['etcd-password-file'], '--etcd-password-file')).toString('utf8').replace(/\r?\n$/, '') : env.EXPERTMESH_ETCD_PASSWORD;
    if (password === undefined) throw new RegistryConfigError('--etcd-user needs a password: --etcd-password-file FILE or EXPERTMESH_ETCD_PASSWORD');
    auth = { username: flags['etcd-user'], password };
  }
  return { tls, auth };
}

/** Usage text of the registry security flags. */
export const REGISTRY_SECURITY_USAGE = '[--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]] [--etcd-user NAME [--etcd-password-file FILE]]';
