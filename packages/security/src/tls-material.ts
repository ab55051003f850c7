import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/** PEM files of one endpoint: its certificate (chain), its private key, and the CA it trusts for peers. */
export interface TlsFiles {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly ca?: string | undefined;
}

/** The loaded PEM bytes. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

export class TlsConfigError extends Error {
  override readonly name = 'TlsConfigError';
}

/**
 * Loads `--tls-cert`, `--tls-key` and `--tls-ca` (all three or none; null for none) and checks them
 * before any connection is made: the key belongs to the certificate, and the certificate is within
 * its validity period. A mistake here is reported at start-up, not as a handshake failure later.
 */
export async function loadTls(files: TlsFiles, flagPrefix = '--tls'): Promise<TlsMaterial | null> {
  const given = [files.cert, files.key, files.ca].filter((f) => f !== undefined && f !== '').length;
  if (given === 0) return null;
  if (given !== 3) throw new TlsConfigError(`${flagPrefix}-cert, ${flagPrefix}-key and ${flagPrefix}-ca go together (mutual TLS needs all three)`);
  const read = async (path: string, flag: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new TlsConfigError(`${flag} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  };
  const material = { cert: await read(files.cert!, `${flagPrefix}-cert`), key: await read(files.key!, `${flagPrefix}-key`), ca: await read(files.ca!, `${flagPrefix}-ca`) };
  checkTls(material, flagPrefix);
  return material;
}

/** Throws TlsConfigError when the key does not match the certificate or the certificate is not valid now. */
export function checkTls(m: TlsMaterial, flagPrefix = '--tls'): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(m.cert);
  } catch (e) {
    throw new TlsConfigError(`${flagPrefix}-cert is not a PEM certificate: ${(e as Error).message}`);
  }
  try {
    new X509Certificate(m.ca);
  } catch (e) {
    throw new TlsConfigError(`${flagPrefix}-ca is not a PEM certificate: ${(e as Error).message}`);
  }
  let key;
  try {
    key = createPrivateKey(m.key);
  } catch (e) {
    throw new TlsConfigError(`${flagPrefix}-key is not a PEM private key: ${(e as Error).message}`);
  }
  if (!cert.checkPrivateKey(key)) throw new TlsConfigError(`${flagPrefix}-key is not the private key of ${flagPrefix}-cert (${cert.subject.replace(/\n/g, ', ')}): give the key the certificate was issued for`);
  const now = Date.now();
  if (Date.parse(cert.validTo) < now) throw new TlsConfigError(`${flagPrefix}-cert expired on ${cert.validTo}: issue a new certificate`);
  if (Date.parse(cert.validFrom) > now) throw new TlsConfigError(`${flagPrefix}-cert is not valid before ${cert.validFrom}: check the clock or the certificate`);
}
