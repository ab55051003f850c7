import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { status } from '@grpc/grpc-js';
import { socketServerTls, hostPort, type TlsMaterial } from '@expertmesh/security';
import {
  decodeRequestMessage,
  encodeErrorPayload,
  encodeFrameHeader,
  encodeResponseParts,
  FrameError,
  FrameKind,
  FrameReader,
  type FrameHeader,
  type RunExpertsRequest__Output,
  type RunExpertsResponse,
} from '@expertmesh/wire';
import { toShardError } from './shard-request-error.js';

/** Runs one request (the shard's shared accept path: checks, compute turns, metrics, spans). */
export type FrameHandler = (request: RunExpertsRequest__Output, signal: AbortSignal) => Promise<RunExpertsResponse>;

export interface FrameListenerOptions {
  /** Mutual TLS with the gRPC server's CA, certificate and key; plain TCP when null (where plaintext gRPC is allowed). */
  readonly tls: TlsMaterial | null;
  /** Largest payload accepted: the gRPC server's message limit. */
  readonly maxFrameBytes: number;
  /** Requests of one connection being computed at once; beyond it the socket is not read (TCP backpressure). */
  readonly maxInFlightPerConnection: number;
  /** Connections at once (each router holds one per shard). */
  readonly maxConnections?: number;
}

/**
 * The frames transport of an expert shard (see @expertmesh/wire frames.ts): the expert-compute call
 * only, beside the gRPC server that keeps health, GetShardInfo and the fallback. Requests of one
 * connection run concurrently through the same handler as gRPC calls and are answered as they finish,
 * matched by request id. A frame that breaks the protocol is answered with an ERROR frame and closes
 * its connection only.
 */
export class FrameListener {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly handle: FrameHandler,
    private readonly options: FrameListenerOptions,
  ) {
    const onSocket = (socket: Socket): void => this.serve(socket);
    this.server = options.tls ? createTlsServer(socketServerTls(options.tls), onSocket) : createTcpServer(onSocket);
    this.server.maxConnections = options.maxConnections ?? 256;
    // A failed handshake (no certificate, another CA) is the client's problem; the listener goes on.
    this.server.on('tlsClientError', (_e: Error, socket: Socket) => socket.destroy());
  }

  /** Binds (port 0 picks a free one); the bound HOST:PORT. */
  listen(host: string, port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(hostPort(host, (this.server.address() as AddressInfo).port));
      });
    });
  }

  /** Stops accepting connections and closes the open ones (call once accepted requests are answered). */
  close(): Promise<void> {
    for (const s of this.sockets) s.end();
    return new Promise((resolve) => {
      const force = setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 2000);
      force.unref();
      this.server.close(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const running = new Map<number, AbortController>();
    let broken = false;
    let writable = true;
    const throttle = (): void => {
      if (running.size >= this.options.maxInFlightPerConnection || !writable) socket.pause();
      else if (!broken) socket.resume();
    };
    // `tail` (an answer's values, a view of the computed tensor: no copy) follows `payload` in the same frame.
    const send = (kind: FrameKind, requestId: number, payload: Buffer, tail?: Buffer): void => {
      if (socket.destroyed || socket.writableEnded) return;
      socket.cork();
      socket.write(encodeFrameHeader(kind, requestId, payload.length + (tail?.length ?? 0)));
      let ok = socket.write(payload);
      if (tail?.length) ok = socket.write(tail);
      socket.uncork();
      if (!ok && writable) {
        writable = false;
        socket.once('drain', () => {
          writable = true;
          throttle();
        });
      }
    };
    const refuse = (e: FrameError): void => {
      broken = true;
      socket.pause();
      send(FrameKind.error, e.requestId, encodeErrorPayload(e.code, e.message));
      socket.end(() => socket.destroy());
    };
    const onFrame = (header: FrameHeader, payload: Buffer): void => {
      if (broken) return;
      if (header.kind === FrameKind.cancel) {
        running.get(header.requestId)?.abort();
        return;
      }
      if (header.kind !== FrameKind.request) throw new FrameError(status.INVALID_ARGUMENT, `a shard takes request and cancel frames, not kind ${header.kind}`, header.requestId);
      if (running.has(header.requestId)) throw new FrameError(status.INVALID_ARGUMENT, `request id ${header.requestId} is already in flight on this connection`, header.requestId);
      const request = decodeRequestMessage(payload, header.requestId);
      // The router's call span travels in the header; it is the parent of this shard's spans.
      if (header.traceparent) request.traceContext = { ...request.traceContext, traceparent: header.traceparent };
      const abort = new AbortController();
      running.set(header.requestId, abort);
      throttle();
      this.handle(request, abort.signal)
        .then(
          (response) => {
            const { head, data } = encodeResponseParts(response);
            send(FrameKind.response, header.requestId, head, data);
          },
          (e: unknown) => {
            const err = toShardError(e);
            send(FrameKind.error, header.requestId, encodeErrorPayload(err.code, err.message));
          },
        )
        .finally(() => {
          running.delete(header.requestId);
          throttle();
        });
    };
    const reader = new FrameReader(this.options.maxFrameBytes, onFrame);
    socket.on('data', (chunk: Buffer) => {
      if (broken) return;
      try {
        reader.push(chunk);
      } catch (e) {
        if (e instanceof FrameError) refuse(e);
        else refuse(new FrameError(status.INTERNAL, `frame handling failed: ${(e as Error).message}`));
      }
    });
    socket.on('error', () => undefined); // A router that goes away is not the shard's problem.
    socket.on('close', () => {
      this.sockets.delete(socket);
      for (const a of running.values()) a.abort();
    });
  }
}
