import { connect, type ClientHttp2Session } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { raiseServerReceiveWindow, ReceiveWindowError } from '../src/index.js';

/** What a client connecting to `port` is allowed to send: per stream (SETTINGS) and on the connection (WINDOW_UPDATE). */
async function sendWindows(port: number): Promise<{ stream: number; connection: number; session: ClientHttp2Session }> {
  const session = connect(`http://127.0.0.1:${port}`);
  await new Promise<void>((resolve, reject) => {
    session.once('remoteSettings', () => resolve());
    session.once('error', reject);
  });
  // The connection-level WINDOW_UPDATE follows the SETTINGS frame: a ping's answer comes after both.
  await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
  return { stream: session.remoteSettings.initialWindowSize ?? 65_535, connection: session.state.remoteWindowSize ?? 0, session };
}

describe('shard receive window', () => {
  const servers: grpc.Server[] = [];
  const sessions: ClientHttp2Session[] = [];
  afterEach(() => {
    for (const s of sessions.splice(0)) s.close();
    for (const s of servers.splice(0)) s.forceShutdown();
  });

  const bound = async (): Promise<{ server: grpc.Server; port: number }> => {
    const server = new grpc.Server();
    servers.push(server);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    return { server, port };
  };

  it("a grpc-js server alone lets clients send 64 KiB before a WINDOW_UPDATE (Node's default)", async () => {
    const { port } = await bound();
    const w = await sendWindows(port);
    sessions.push(w.session);
    expect(w.stream).toBe(65_535);
    expect(w.connection).toBe(65_535);
  });

  it('raised, every new session lets a client send the whole window on a stream and on the connection', async () => {
    const { server, port } = await bound();
    raiseServerReceiveWindow(server, 32 << 20);
    for (let i = 0; i < 2; i++) {
      const w = await sendWindows(port);
      sessions.push(w.session);
      expect(w.stream).toBe(32 << 20);
      expect(w.connection).toBe(32 << 20);
    }
  });

  it('refuses a server that is not bound yet', () => {
    const server = new grpc.Server();
    expect(() => raiseServerReceiveWindow(server)).toThrow(ReceiveWindowError);
  });
});
