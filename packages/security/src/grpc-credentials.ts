import * as grpc from '@grpc/grpc-js';
import type { TlsMaterial } from './tls-material.js';

/**
 * The shard's server side: with TLS material, mutual TLS (a client must present a certificate
 * signed by the CA); without, plaintext (loopback only, see checkExposure).
 */
export function serverCredentials(tls: TlsMaterial | null): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true);
}

/**
 * The router's side of a channel to a shard: its client certificate, and the CA the shard's
 * certificate must chain to. grpc checks that the certificate names the host dialled (its DNS or
 * IP subject alternative names), so a record pointing at an address is only trusted if the process
 * there holds a certificate issued for that address.
 */
export function channelCredentials(tls: TlsMaterial | null): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert);
}
