import { describe, expect, it } from 'vitest';
import { hostOf, hostPort, portOf } from '../src/index.js';

describe('host and port', () => {
  it('joins a host and a port, an IPv6 host in brackets, and hostOf takes the host back', () => {
    expect(hostPort('127.0.0.1', 50051)).toBe('127.0.0.1:50051');
    expect(hostPort('::1', 0)).toBe('[::1]:0');
    expect(hostPort('shard-0.expertmesh', 7000)).toBe('shard-0.expertmesh:7000');
    for (const host of ['10.1.2.3', '::1', 'fe80::1', 'localhost']) expect(hostOf(hostPort(host, 9))).toBe(host);
  });

  it('portOf takes the port back, and says null where there is none', () => {
    for (const host of ['10.1.2.3', '::1', 'shard-0.expertmesh']) expect(portOf(hostPort(host, 50051))).toBe(50051);
    expect(portOf('')).toBeNull();
    expect(portOf('banana')).toBeNull();
  });
});
