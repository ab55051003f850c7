import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

/** A certificate and its private key, as PEM. */
export interface IssuedCertificate {
  readonly cert: string;
  readonly key: string;
}

export interface IssueOptions {
  /** The subject's common name (a shard id, "router", …). */
  readonly commonName: string;
  /** DNS names and IP addresses the certificate is valid for (subject alternative names). */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Validity window; by default from an hour ago for `validDays` (30) days. */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly validDays?: number;
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

function window(o: { notBefore?: Date; notAfter?: Date; validDays?: number }): { notBefore: Date; notAfter: Date } {
  const notBefore = o.notBefore ?? new Date(Date.now() - 3_600_000);
  return { notBefore, notAfter: o.notAfter ?? new Date(notBefore.getTime() + (o.validDays ?? 30) * DAY_MS) };
}

/**
 * A certificate authority made on the spot (ECDSA P-256): `expertmesh up` makes one per run so its
 * local cluster talks mutual TLS without the user making certificates; tests make odd ones
 * (expired, another CA). Production clusters use their own CA (docs/deployment.md).
 */
export class CertificateAuthority {
  private constructor(
    private readonly keys: CryptoKeyPair,
    private readonly certificate: x509.X509Certificate,
    /** The CA certificate, PEM: what every endpoint trusts. */
    readonly cert: string,
  ) {}

  static async create(commonName = 'ExpertMesh throwaway CA', validDays = 30): Promise<CertificateAuthority> {
    const keys = await keyPair();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      name: `CN=${commonName}`,
      keys,
      signingAlgorithm: SIGNING_ALGORITHM,
      ...window({ validDays }),
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new CertificateAuthority(keys, certificate, certificate.toString('pem'));
  }

  /** A leaf certificate for both TLS roles (server and client), signed by this CA. */
  async issue(o: IssueOptions): Promise<IssuedCertificate> {
    const keys = await keyPair();
    const names: x509.JsonGeneralName[] = [...(o.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })), ...(o.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value }))];
    const cert = await x509.X509CertificateGenerator.create({
      subject: `CN=${o.commonName}`,
      issuer: this.certificate.subject,
      publicKey: keys.publicKey,
      signingKey: this.keys.privateKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      ...window(o),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
        await x509.AuthorityKeyIdentifierExtension.create(this.keys.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
  }

  /** A certificate for this machine's loopback names (localhost, 127.0.0.1, ::1). */
  issueLoopback(commonName: string, o: Omit<IssueOptions, 'commonName' | 'dnsNames' | 'ipAddresses'> = {}): Promise<IssuedCertificate> {
    return this.issue({ ...o, commonName, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] });
  }
}
