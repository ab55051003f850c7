import { isIP } from 'node:net';

/** Whether `host` (a bind or dial host, brackets allowed) names only this machine: 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h);
  return false;
}

/** The host part of HOST:PORT or [V6]:PORT. */
export function hostOf(address: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  return m ? m[1]! : address;
}

/** The port of HOST:PORT or [V6]:PORT; null when `address` ends in no port. */
export function portOf(address: string): number | null {
  const m = /:(\d+)$/.exec(address);
  return m ? Number(m[1]) : null;
}

/** HOST:PORT, an IPv6 host in brackets ([V6]:PORT): the inverse of hostOf. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
