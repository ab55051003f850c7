import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import {
  CHANNEL_OPTIONS,
  expertmeshV1,
  type ExpertShardServiceClient,
  type GetShardInfoResponse__Output,
  type RunExpertsRequest,
  type RunExpertsResponse__Output,
  type RunExpertsStreamResponse__Output,
} from '@expertmesh/wire';
import { ShardCallError, ShardTimeoutError, ShardUnavailableError } from './dispatch-errors.js';

export type DispatchTransport = 'stream' | 'unary';

/** How to reach shards: TLS credentials (plaintext by default) and channel options (message limits from the model). */
export interface ShardChannel {
  readonly credentials?: grpc.ChannelCredentials;
  readonly options?: grpc.ChannelOptions;
}

/** The standard grpc.health.v1 client, on the same channel as the dispatch calls. */
const HealthClient = grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'grpc.health.v1.Health');
type HealthCheck = (request: { service: string }, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, response?: { status?: string }) => void) => void;

type DispatchStream = grpc.ClientDuplexStream<RunExpertsRequest, RunExpertsStreamResponse__Output>;

interface Pending {
  readonly resolve: (r: RunExpertsResponse__Output) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
  /** The stream the request went out on (null for unary calls). */
  readonly stream: DispatchStream | null;
}

/**
 * The router's link to one shard. By default every request goes over one long-lived bidirectional
 * stream (measured on loopback: ~45 µs a message against ~0.6 ms a unary call), matched to its
 * response by request id. A broken stream fails its outstanding requests and is reopened on the
 * next send.
 */
export class ShardConnection {
  private readonly client: ExpertShardServiceClient;
  private stream: DispatchStream | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly unaryCalls = new Set<grpc.ClientUnaryCall>();
  private readonly healthClient: grpc.Client;
  private nextRequestId = 1;
  private isClosed = false;

  constructor(
    readonly address: string,
    readonly transport: DispatchTransport = 'stream',
    channel: ShardChannel = {},
  ) {
    const credentials = channel.credentials ?? grpc.credentials.createInsecure();
    this.client = new (expertmeshV1().ExpertShardService)(address, credentials, channel.options ?? CHANNEL_OPTIONS);
    this.healthClient = new HealthClient(address, credentials, { channelOverride: this.client.getChannel() });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Asks the shard's grpc.health.v1 service, over the dispatch channel (so a hung or cut-off link
   * fails the check as it fails calls); true only for SERVING within `deadlineMs`.
   */
  checkHealth(deadlineMs: number): Promise<boolean> {
    const check = (this.healthClient as unknown as { Check: HealthCheck }).Check.bind(this.healthClient);
    return new Promise((resolve) => check({ service: '' }, { deadline: Date.now() + deadlineMs }, (err, response) => resolve(!err && response?.status === 'SERVING')));
  }

  /**
   * Fails every outstanding request with `error` and drops the stream (a shard that hung or broke
   * gets a fresh one when it is used again, never a backlog of stale requests).
   */
  failPending(error: Error): void {
    this.failAll(error);
    for (const call of this.unaryCalls) call.cancel();
    this.unaryCalls.clear();
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
  }

  run(request: Omit<RunExpertsRequest, 'requestId'>, deadlineMs: number): Promise<RunExpertsResponse__Output> {
    return this.transport === 'unary' ? this.runUnary(request, deadlineMs) : this.runOnStream(request, deadlineMs);
  }

  info(deadlineMs = 10_000): Promise<GetShardInfoResponse__Output> {
    return new Promise((resolve, reject) =>
      this.client.GetShardInfo({}, { deadline: Date.now() + deadlineMs }, (err, info) =>
        err || !info ? reject(new ShardUnavailableError(this.address, err?.details ?? 'no answer')) : resolve(info),
      ),
    );
  }

  close(): void {
    this.isClosed = true;
    this.failAll(new ShardUnavailableError(this.address, 'connection closed by the router'));
    this.stream?.end();
    this.stream = null;
    this.client.close();
  }

  private runUnary(request: Omit<RunExpertsRequest, 'requestId'>, deadlineMs: number): Promise<RunExpertsResponse__Output> {
    return new Promise((resolve, reject) => {
      const call = this.client.RunExperts(request, { deadline: Date.now() + deadlineMs }, (err, response) => {
        this.unaryCalls.delete(call);
        if (err) {
          if (err.code === grpc.status.DEADLINE_EXCEEDED) reject(new ShardTimeoutError(this.address, request.layer ?? -1, deadlineMs));
          else if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED) reject(new ShardUnavailableError(this.address, err.details));
          else reject(new ShardCallError(this.address, err.code, err.details));
        } else resolve(response!);
      });
      this.unaryCalls.add(call);
    });
  }

  private runOnStream(request: Omit<RunExpertsRequest, 'requestId'>, deadlineMs: number): Promise<RunExpertsResponse__Output> {
    const requestId = this.nextRequestId++;
    const stream = this.openStream();
    return new Promise((resolve, reject) => {
      // The timeout waits for one more poll phase, so an answer that arrived while this process was
      // busy is read before the shard is blamed for being late.
      const timer = setTimeout(
        () =>
          setImmediate(() => {
            if (!this.pending.delete(requestId)) return;
            reject(new ShardTimeoutError(this.address, request.layer ?? -1, deadlineMs));
          }),
        deadlineMs,
      );
      this.pending.set(requestId, { resolve, reject, timer, stream });
      stream.write({ ...request, requestId });
    });
  }

  private openStream(): DispatchStream {
    if (this.stream) return this.stream;
    const stream = this.client.RunExpertsStream();
    stream.on('data', (msg: RunExpertsStreamResponse__Output) => this.settle(msg, stream));
    // A broken stream fails the requests it carried, not those of a newer stream.
    const broken = (detail: string): void => {
      if (this.stream === stream) this.stream = null;
      this.failAll(new ShardUnavailableError(this.address, detail), stream);
    };
    stream.on('error', (e: grpc.ServiceError) => broken(e.details || e.message));
    stream.on('end', () => broken('the shard ended the stream (shutting down?)'));
    this.stream = stream;
    return stream;
  }

  private settle(msg: RunExpertsStreamResponse__Output, stream: DispatchStream): void {
    const p = this.pending.get(msg.requestId);
    if (!p || p.stream !== stream) return; // Timed out or failed already.
    this.pending.delete(msg.requestId);
    clearTimeout(p.timer);
    if (msg.error) {
      if (msg.error.code === grpc.status.UNAVAILABLE) p.reject(new ShardUnavailableError(this.address, msg.error.message));
      else p.reject(new ShardCallError(this.address, msg.error.code, msg.error.message));
    } else if (msg.response) p.resolve(msg.response);
    else p.reject(new ShardCallError(this.address, grpc.status.INTERNAL, 'empty stream response'));
  }

  private failAll(error: Error, stream?: DispatchStream): void {
    for (const [id, p] of this.pending) {
      if (stream && p.stream !== stream) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}
