import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeTlsFiles } from '@expertmesh/security';
import { CertificateAuthority } from '@expertmesh/security/certificate-authority';

const DAY = 86_400_000;

/** Certificate sets for the TLS refusal tests: a good CA, another CA, and odd certificates of each. */
export async function makeTlsFixtures(dir: string): Promise<{
  good: (name: string) => { cert: string; key: string; ca: string };
  files: Record<'shard' | 'router' | 'otherCa' | 'expired' | 'wrongHost', { cert: string; key: string; ca: string }>;
}> {
  const ca = await CertificateAuthority.create('test CA');
  const other = await CertificateAuthority.create('another CA');
  const write = async (sub: string, name: string, issued: { cert: string; key: string }, caCert: string) => {
    await mkdir(join(dir, sub), { recursive: true });
    return writeTlsFiles(join(dir, sub), name, issued, caCert);
  };
  const files = {
    shard: await write('good', 'shard', await ca.issueLoopback('shard'), ca.cert),
    router: await write('good', 'router', await ca.issueLoopback('router'), ca.cert),
    otherCa: await write('other', 'router', await other.issueLoopback('router'), other.cert),
    expired: await write('expired', 'expired', await ca.issueLoopback('expired', { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) }), ca.cert),
    wrongHost: await write('wronghost', 'shard', await ca.issue({ commonName: 'shard', dnsNames: ['elsewhere.test'] }), ca.cert),
  };
  return { good: (name) => (name === 'shard' ? files.shard : files.router), files };
}
