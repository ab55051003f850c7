export { isLoopbackHost, hostOf, hostPort, portOf } from './loopback.js';
export { checkExposure, InsecureExposureError } from './exposure-policy.js';
export { loadTls, checkTls, TlsConfigError } from './tls-material.js';
export type { TlsFiles, TlsMaterial } from './tls-material.js';
export { serverCredentials, channelCredentials } from './grpc-credentials.js';
export { socketServerTls, socketClientTls } from './socket-tls.js';
// The class itself is '@expertmesh/security/certificate-authority' (it loads @peculiar/x509: see tls-bundle.ts).
export type { CertificateAuthority, IssuedCertificate, IssueOptions } from './certificate-authority.js';
export { writeTlsFiles, makeLoopbackTlsBundle } from './tls-bundle.js';
export { bearerMatches } from './bearer-token.js';
