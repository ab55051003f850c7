import type { ClusterRegistry } from './cluster-registry.js';
import { EtcdRegistry } from './etcd-registry.js';
import { HttpRegistry } from './http-registry.js';

/**
 * The registry a process was told to use: `--etcd URL[,URL]` with `--cluster NAME`, or the embedded
 * registry server's `--registry URL` (one cluster per server). null when neither is given.
 */
export function openRegistry(options: { etcd?: string | undefined; registry?: string | undefined; cluster?: string | undefined }): ClusterRegistry | null {
  if (options.etcd && options.registry) throw new Error('give --etcd or --registry, not both');
  if (options.registry) return new HttpRegistry(options.registry);
  if (options.etcd) {
    if (!options.cluster) throw new Error('--etcd needs --cluster NAME');
    return new EtcdRegistry(options.etcd.split(','), options.cluster);
  }
  return null;
}
