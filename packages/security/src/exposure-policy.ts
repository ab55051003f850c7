import { isLoopbackHost } from './loopback.js';

/** A process asked to listen beyond loopback (or to trust a peer beyond it) without authentication. */
export class InsecureExposureError extends Error {
  override readonly name = 'InsecureExposureError';
}

/**
 * Secure by default: an endpoint reachable from other machines must be authenticated. Loopback binds
 * may go without (the machine's own users), anything else refuses to start unless the operator says
 * `--insecure` explicitly.
 */
export function checkExposure(what: { readonly endpoint: string; readonly host: string; readonly secured: boolean; readonly insecure: boolean; readonly howToSecure: string }): void {
  if (what.secured || what.insecure || isLoopbackHost(what.host)) return;
  throw new InsecureExposureError(
    `refusing to expose the ${what.endpoint} on ${what.host} without authentication: ${what.howToSecure}, bind a loopback address, or pass --insecure to accept the risk`,
  );
}
