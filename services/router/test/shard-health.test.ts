import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import type { HolderHealthChange } from '@expertmesh/routed-experts';
import { DEFAULT_DEADLINE } from '../src/experts/round-trip-deadline.js';
import { ShardConnection } from '../src/experts/shard-connection.js';
import { ShardHealth } from '../src/experts/shard-health.js';
import { ShardUnavailableError } from '../src/experts/dispatch-errors.js';

/** A loopback port nothing listens on (taken, then freed). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

describe('a suspect shard whose connection the router drops', () => {
  it('is reported gone (not healthy again) once its connection is closed, and its probing stops', async () => {
    const connection = new ShardConnection(`127.0.0.1:${await freePort()}`);
    const changes: HolderHealthChange[] = [];
    const health = new ShardHealth(connection, DEFAULT_DEADLINE, { intervalMs: 20, timeoutMs: 200 }, (c) => changes.push(c));
    const probe = vi.spyOn(connection, 'checkHealth');
    health.markSuspect('failed', new ShardUnavailableError(connection.address, 'connection refused'));
    // Probing a shard that does not answer keeps it suspect.
    await vi.waitFor(() => expect(probe.mock.calls.length).toBeGreaterThan(1), { timeout: 10_000 });
    expect(changes.map((c) => [c.suspect, c.gone ?? false])).toEqual([[true, false]]);
    // Its registry record went: the source closes the connection.
    connection.close();
    await vi.waitFor(() => expect(changes).toHaveLength(2), { timeout: 10_000 });
    expect(changes[1]).toMatchObject({ shard: connection.address, suspect: false, gone: true });
    const probes = probe.mock.calls.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(probe.mock.calls.length).toBe(probes);
  });

  it('a call failing because the router closed the connection itself makes nobody suspect', async () => {
    const connection = new ShardConnection(`127.0.0.1:${await freePort()}`);
    const changes: HolderHealthChange[] = [];
    const health = new ShardHealth(connection, DEFAULT_DEADLINE, { intervalMs: 20, timeoutMs: 200 }, (c) => changes.push(c));
    connection.close();
    health.markSuspect('failed', new ShardUnavailableError(connection.address, 'connection closed by the router'));
    expect({ suspect: health.suspect, changes }).toEqual({ suspect: false, changes: [] });
  });
});
