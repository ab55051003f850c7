import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { status } from '@grpc/grpc-js';
import { hostOf, hostPort, portOf, socketClientTls, type TlsMaterial } from '@expertmesh/security';
import {
  decodeErrorPayload,
  decodeResponseMessage,
  encodeFrameHeader,
  encodeRequestParts,
  FrameError,
  FrameKind,
  FrameReader,
  type FrameHeader,
  type RunExpertsRequest,
  type RunExpertsResponse__Output,
} from '@expertmesh/wire';
import { shardAnswerError, ShardCallError, ShardTimeoutError, ShardUnavailableError } from './dispatch-errors.js';
import { lateAnswerTimer } from './late-answer-timer.js';
import { PendingCalls } from './pending-calls.js';

/**
 * The frames endpoint to dial for a shard reached at `grpcAddress` whose GetShardInfo says its
 * frames listener is bound at `bound` ('' when it has none): the same host, the bound port (a shard
 * bound to 0.0.0.0 reports that, which is no address to dial).
 */
export function framesEndpointOf(grpcAddress: string, bound: string): string | null {
  const port = portOf(bound);
  return port === null ? null : hostPort(hostOf(grpcAddress), port);
}


/**
 * The router's frames link to one shard's hot path (see @expertmesh/wire frames.ts): one socket
 * (mutual TLS with the gRPC channel's material, or plain TCP where plaintext gRPC is allowed),
 * requests multiplexed by id, each with its deadline. It fails calls with the same typed errors as
 * the gRPC stream, so failover treats both alike: a broken connection fails its outstanding calls
 * with ShardUnavailableError (the shard becomes suspect at once, its rows go to replicas) and is
 * reopened on the next send.
 */
export class FrameConnection {
  private socket: Socket | null = null;
  private readonly pending = new PendingCalls<Socket>();
  private nextRequestId = 1;
  private isClosed = false;

  constructor(
    /** The shard's frames endpoint, HOST:PORT. */
    readonly address: string,
    /** How errors name the shard: its gRPC address, as everywhere else. */
    private readonly shard: string,
    private readonly tls: TlsMaterial | null,
    private readonly maxFrameBytes: number,
  ) {}

  /**
   * Sends `request` and resolves with the shard's answer. The hidden states are written from their own memory
   * (encodeRequestParts: no copy into a message buffer, and placed so that the shard reads them in place): their
   * bytes must not change after this call (the router sends a fresh gather of rows per call).
   */
  run(request: Omit<RunExpertsRequest, 'requestId'>, deadlineMs: number): Promise<RunExpertsResponse__Output> {
    if (this.isClosed) return Promise.reject(new ShardUnavailableError(this.shard, 'connection closed by the router'));
    const requestId = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    // The call span's traceparent goes in the frame header (the shard puts it back); the rest of the message is what gRPC sends.
    const { traceparent, ...rest } = request.traceContext ?? {};
    const { head, data } = encodeRequestParts({ ...request, traceContext: rest, requestId });
    const bytes = head.length + data.length;
    if (bytes > this.maxFrameBytes) {
      return Promise.reject(new ShardCallError(this.shard, status.RESOURCE_EXHAUSTED, `request of ${bytes} bytes exceeds the message limit of ${this.maxFrameBytes}: split the batch`));
    }
    const socket = this.open();
    return new Promise((resolve, reject) => {
      const timer = lateAnswerTimer(deadlineMs, () => {
        if (!this.pending.expire(requestId)) return;
        // The shard drops it if it has not started it yet.
        this.write(socket, FrameKind.cancel, requestId);
        reject(new ShardTimeoutError(this.shard, request.layer ?? -1, deadlineMs));
      });
      this.pending.add(requestId, { resolve, reject, timer, carrier: socket });
      this.write(socket, FrameKind.request, requestId, [head, data], traceparent ?? '');
    });
  }

  /** Fails every outstanding call with `error` and drops the connection (a fresh one on the next call). */
  failPending(error: Error): void {
    const socket = this.socket;
    this.socket = null;
    this.pending.failAll(error);
    socket?.destroy();
  }

  close(): void {
    this.isClosed = true;
    this.failPending(new ShardUnavailableError(this.shard, 'connection closed by the router'));
  }

  /** One frame whose payload is `parts` one after the other. */
  private write(socket: Socket, kind: FrameKind, requestId: number, parts: readonly Buffer[] = [], traceparent = ''): void {
    if (socket.destroyed) return;
    socket.cork();
    socket.write(encodeFrameHeader(kind, requestId, parts.reduce((a, p) => a + p.length, 0), traceparent));
    for (const p of parts) if (p.length) socket.write(p);
    socket.uncork();
  }

  private open(): Socket {
    if (this.socket) return this.socket;
    const host = hostOf(this.address);
    const port = Number(portOf(this.address));
    const socket = this.tls ? connectTls({ ...socketClientTls(this.tls, host), port }) : connectTcp({ host, port });
    socket.setNoDelay(true);
    const broken = (detail: string): void => {
      if (this.socket === socket) this.socket = null;
      this.pending.failAll(new ShardUnavailableError(this.shard, `frames connection to ${this.address}: ${detail}`), socket);
      socket.destroy();
    };
    const reader = new FrameReader(this.maxFrameBytes, (header, payload) => this.settle(header, payload, socket));
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        broken(e instanceof FrameError ? `the shard sent a malformed frame (${e.message})` : (e as Error).message);
      }
    });
    socket.on('error', (e: Error) => broken(e.message));
    socket.on('close', () => broken('the shard closed the connection (shutting down?)'));
    this.socket = socket;
    return socket;
  }

  private settle(header: FrameHeader, payload: Buffer, socket: Socket): void {
    if (header.kind === FrameKind.error && header.requestId === 0) {
      // The shard refused the connection's byte stream itself; it closes it next.
      const { code, message } = decodeErrorPayload(payload);
      this.pending.failAll(new ShardCallError(this.shard, code, message), socket);
      return;
    }
    const p = this.pending.take(header.requestId, socket);
    if (!p) return; // Timed out or failed already.
    if (header.kind === FrameKind.response) {
      try {
        p.resolve(decodeResponseMessage(payload, header.requestId));
      } catch (e) {
        p.reject(new ShardCallError(this.shard, status.INTERNAL, (e as Error).message));
      }
    } else if (header.kind === FrameKind.error) {
      const { code, message } = decodeErrorPayload(payload);
      p.reject(shardAnswerError(this.shard, code, message));
    } else p.reject(new ShardCallError(this.shard, status.INTERNAL, `unexpected frame kind ${header.kind} from the shard`));
  }
}
