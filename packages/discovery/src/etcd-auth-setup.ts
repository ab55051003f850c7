import { Etcd3, Range } from 'etcd3';
import type { EtcdSecurity } from './etcd-registry.js';

/**
 * Turns on etcd's authentication with a root user and one user per cluster, each allowed only its
 * own key prefix (/expertmesh/NAME/): what docs/deployment.md does with etcdctl, for tests and tools.
 */
export async function enableEtcdAuth(endpoint: string, security: EtcdSecurity, rootPassword: string, users: readonly { name: string; password: string; cluster: string }[]): Promise<void> {
  const client = new Etcd3({ hosts: [endpoint], ...(security.tls ? { credentials: { rootCertificate: security.tls.ca, ...(security.tls.key ? { privateKey: security.tls.key, certChain: security.tls.cert! } : {}) } } : {}) });
  try {
    for (const u of users) {
      await client.role(u.name).create();
      await client.role(u.name).grant({ permission: 'Readwrite', range: Range.prefix(`/expertmesh/${u.cluster}/`) });
      await client.user(u.name).create(u.password);
      await client.user(u.name).addRole(u.name);
    }
    await client.role('root').create();
    await client.user('root').create(rootPassword);
    await client.user('root').addRole('root');
    await client.auth.authEnable();
  } finally {
    client.close();
  }
}
