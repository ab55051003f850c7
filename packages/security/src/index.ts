export { isLoopbackHost, hostOf, hostPort } from './loopback.js';
export { checkExposure, InsecureExposureError } from './exposure-policy.js';
export { loadTls, checkTls, TlsConfigError } from './tls-material.js';
export type { TlsFiles, TlsMaterial } from './tls-material.js';
export { serverCredentials, channelCredentials } from './grpc-credentials.js';
export { CertificateAuthority } from './certificate-authority.js';
export type { IssuedCertificate, IssueOptions } from './certificate-authority.js';
export { writeTlsFiles, makeLoopbackTlsBundle } from './tls-bundle.js';
export { bearerMatches } from './bearer-token.js';
