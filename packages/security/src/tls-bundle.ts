import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertificateAuthority, IssuedCertificate } from './certificate-authority.js';
import type { TlsFiles } from './tls-material.js';

/** Writes a certificate, its key (mode 0600) and the CA certificate into `dir` as NAME.crt, NAME.key, ca.crt. */
export async function writeTlsFiles(dir: string, name: string, issued: IssuedCertificate, caCert: string): Promise<Required<TlsFiles>> {
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`), ca: join(dir, 'ca.crt') };
  await writeFile(files.ca, caCert);
  await writeFile(files.cert, issued.cert);
  await writeFile(files.key, issued.key, { mode: 0o600 });
  return files;
}

/**
 * A throwaway CA and one loopback certificate per name, in a fresh private temp folder (mode 0700):
 * what `expertmesh up` gives its processes so its cluster is mutually authenticated from the start.
 */
export async function makeLoopbackTlsBundle(names: readonly string[]): Promise<{ dir: string; ca: CertificateAuthority; files: Map<string, Required<TlsFiles>> }> {
  const dir = await mkdtemp(join(tmpdir(), 'expertmesh-tls-'));
  await chmod(dir, 0o700);
  // Loaded here, not with the package: @peculiar/x509 and its dependencies were part of the ~0.3 s every process
  // importing @expertmesh/security (every router and shard) spent at start (see @expertmesh/telemetry's tracing.ts),
  // and only `expertmesh up` issues certificates.
  const { CertificateAuthority } = await import('./certificate-authority.js');
  const ca = await CertificateAuthority.create();
  const files = new Map<string, Required<TlsFiles>>();
  for (const name of names) files.set(name, await writeTlsFiles(dir, name, await ca.issueLoopback(name), ca.cert));
  return { dir, ca, files };
}
