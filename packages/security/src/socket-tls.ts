import { isIP } from 'node:net';
import type { ConnectionOptions, TlsOptions } from 'node:tls';
import type { TlsMaterial } from './tls-material.js';

/**
 * The shard's frames listener (node:tls), under the same rule as its gRPC server: mutual TLS with
 * the same CA, certificate and key; a client without a certificate of the CA is refused in the
 * handshake.
 */
export function socketServerTls(tls: TlsMaterial): TlsOptions {
  return { ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['expertmesh-frames/1'] };
}

/**
 * The router's side of a frames connection: its client certificate, and the CA the shard's must
 * chain to. As grpc does, the shard's certificate must name the host dialled (node's default
 * checkServerIdentity: DNS or IP subject alternative names).
 */
export function socketClientTls(tls: TlsMaterial, host: string): ConnectionOptions {
  const bare = host.replace(/^\[|\]$/g, '');
  return { ca: tls.ca, cert: tls.cert, key: tls.key, host: bare, ...(isIP(bare) ? {} : { servername: bare }), rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['expertmesh-frames/1'] };
}
