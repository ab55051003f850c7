import type { Http2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

/**
 * Receive window (per stream and per connection) of the shard's HTTP/2 sessions: large enough that
 * a batch of hidden states (458 KB for 32 tokens of DeepSeek-R1 in bfloat16) never waits for a
 * WINDOW_UPDATE, which a shard busy in onnxruntime would send late. Memory stays bounded by the
 * message size limit and the shard's in-flight cap, not by the window.
 */
export const SERVER_RECEIVE_WINDOW_BYTES = 64 * 1024 * 1024;

export class ReceiveWindowError extends Error {
  override readonly name = 'ReceiveWindowError';
}

/**
 * grpc-js lets a client raise its own receive window (`grpc-node.flow_control_window`) but not a
 * server: its HTTP/2 sessions open with Node's 64 KiB (and its sockets without TCP_NODELAY, which
 * its client sets). This raises the window of every session of
 * `server` from now on (call it after bindAsync, before clients connect): SETTINGS_INITIAL_WINDOW_SIZE
 * for each stream and a connection-level WINDOW_UPDATE. It reaches into grpc-js's listener map and
 * throws ReceiveWindowError if that is not there (a grpc-js upgrade changed it: tests catch this).
 */
export function raiseServerReceiveWindow(server: grpc.Server, bytes = SERVER_RECEIVE_WINDOW_BYTES): void {
  const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(listeners instanceof Map) || listeners.size === 0) {
    throw new ReceiveWindowError('cannot raise the receive window: grpc-js has no bound HTTP/2 server here (call after bindAsync; a grpc-js upgrade may have moved it)');
  }
  for (const http2Server of listeners.keys() as Iterable<{ on(event: 'session', listener: (session: Http2Session) => void): void; on(event: 'connection', listener: (socket: Socket) => void): void }>) {
    // Answers go out whole at once: without TCP_NODELAY the tail of a response waits for the ACK of its head.
    http2Server.on('connection', (socket) => socket.setNoDelay(true));
    http2Server.on('session', (session) => {
      const apply = (): void => {
        if (session.destroyed) return;
        session.settings({ initialWindowSize: bytes });
        session.setLocalWindowSize(bytes);
      };
      if (session.connecting) session.once('connect', apply);
      else apply();
    });
  }
}
