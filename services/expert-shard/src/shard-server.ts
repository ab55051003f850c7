import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { IdleHeapReturn } from '@expertmesh/expert-kernel';
import { channelOptions, decodeRequestMessage, encodePairs, encodeResponseMessage, encodeTensor, expertmeshV1, maxCallMessageBytes, raiseServerReceiveWindow, type ExpertShardServiceHandlers, type GetShardInfoResponse, type RunExpertsRequest__Output, type RunExpertsStreamResponse } from '@expertmesh/wire';
import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import { extractContext, ShardMetrics, tracer } from '@expertmesh/telemetry';
import { hostPort, serverCredentials, type TlsMaterial } from '@expertmesh/security';
import type { RunExpertsRequest, RunExpertsResponse, WireDtype } from '@expertmesh/wire';
import { ComputeTurns } from './compute-turns.js';
import type { RunStats, ShardCompute } from './shard-compute.js';
import { ShardRequestError, toShardError } from './shard-request-error.js';
import { FrameListener } from './frame-listener.js';

export const SHARD_SERVICE_NAME = 'expertmesh.v1.ExpertShardService';

export interface ShardServerOptions {
  /** Mutual TLS (clients must present a certificate of the CA); plaintext when null. */
  readonly tls?: TlsMaterial | null;
  /** Requests of one stream being computed at once; beyond it the stream is not read (backpressure). */
  readonly maxInFlightPerStream?: number;
  /** Concurrent calls per connection (HTTP/2 streams). */
  readonly maxConcurrentCalls?: number;
  /** After this long without calls, freed heap pages (large calls' activations) go back to the kernel; 0 never. */
  readonly idleHeapReturnMs?: number;
}

/** As the router's engine loop: long enough that a stream of calls never waits for it. */
export const SHARD_IDLE_HEAP_RETURN_MS = 1000;

export const DEFAULT_MAX_IN_FLIGHT_PER_STREAM = 16;

/**
 * gRPC transport of an expert shard: the unary and streaming RunExperts, GetShardInfo and the
 * standard health service. onnxruntime-node runs each graph on the calling thread: with the experts on
 * this thread (--expert-worker off) that blocks the event loop, and calls that arrive meanwhile wait in
 * gRPC's buffers; with them in a worker thread (WorkerExperts) this thread only decodes and encodes.
 * On shutdown it drains: refuses new work, finishes what it accepted.
 */
export class ShardServer {
  private readonly server: grpc.Server;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SHARD_SERVICE_NAME]: 'NOT_SERVING' });
  private readonly openStreams = new Set<grpc.ServerDuplexStream<RunExpertsRequest__Output, RunExpertsStreamResponse>>();
  private inFlight = 0;
  /** Computes run one at a time, each answer out before the next compute blocks the event loop. */
  private readonly turns = new ComputeTurns();
  private idle: (() => void) | null = null;
  private draining = false;
  private healthServer: grpc.Server | null = null;
  private frames: FrameListener | null = null;
  /** Where the frames listener is bound ('' when there is none). */
  private framesAddress = '';
  /** Returns the heap pages glibc keeps of freed activations once no call has come for a while. */
  readonly heapReturn: IdleHeapReturn;

  constructor(
    private readonly compute: ShardCompute,
    readonly shardId: string,
    private readonly metrics: ShardMetrics = new ShardMetrics(),
    private readonly options: ShardServerOptions = {},
  ) {
    // Messages are bounded by what a call within the model's limits needs, not by a fixed gigabyte.
    this.server = new grpc.Server({ ...channelOptions(maxCallMessageBytes(compute.limits)), 'grpc.max_concurrent_streams': options.maxConcurrentCalls ?? 64 });
    const handlers: ExpertShardServiceHandlers = {
      RunExperts: (call, callback) => {
        this.accept(call.request)
          .then((response) => callback(null, response))
          .catch((e: unknown) => {
            const err = toShardError(e);
            callback({ code: err.code, details: err.message });
          });
      },
      RunExpertsStream: (call) => this.serveStream(call),
      GetShardInfo: (_call, callback) => callback(null, this.info()),
    };
    this.server.addService(expertmeshV1().ExpertShardService.service, handlers);
    this.recordWeights();
    this.health.addToServer(this.server);
    this.heapReturn = new IdleHeapReturn(options.idleHeapReturnMs ?? SHARD_IDLE_HEAP_RETURN_MS, () => this.inFlight > 0, () => this.metrics.idleMemoryReturns.inc());
  }

  /** Binds (port 0 picks a free one) and starts serving; returns the bound address. */
  async listen(host: string, port: number, options: { serving?: boolean } = {}): Promise<string> {
    const bound = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(hostPort(host, port), serverCredentials(this.options.tls ?? null), (err, p) => (err ? reject(err) : resolve(p))),
    );
    // Requests of a batch's hidden states must not wait for a WINDOW_UPDATE (64 KiB by default).
    raiseServerReceiveWindow(this.server);
    if (options.serving ?? true) this.setServing(true);
    return hostPort(host, bound);
  }

  /**
   * Serves the expert-compute call also as length-prefixed frames on a second port (the hot path
   * that skips HTTP/2), under the gRPC server's TLS and limits and through the same accept path.
   */
  async listenFrames(host: string, port: number): Promise<string> {
    const listener = new FrameListener((request, signal) => this.accept(request, signal), {
      tls: this.options.tls ?? null,
      maxFrameBytes: maxCallMessageBytes(this.compute.limits),
      maxInFlightPerConnection: this.options.maxInFlightPerStream ?? DEFAULT_MAX_IN_FLIGHT_PER_STREAM,
    });
    const address = await listener.listen(host, port);
    this.frames = listener;
    this.framesAddress = address;
    return address;
  }

  /**
   * Answers synthetic calls, one per MoE layer held and wire format, through this shard's call path: the
   * request decoded from its bytes as the transports decode it, the compute, the answer encoded for gRPC
   * and for frames; no metrics, spans or step ends. In a process that has answered nothing yet every
   * function of that path runs for the first time (protobufjs generates its decoders and encoders on first
   * use, V8 compiles the rest): ~7 ms over a step's 3 calls in the demo model beyond the experts' own first
   * runs (docs/benchmarks.md, issue 16, round 9), paid by the first real call otherwise. Run before the
   * shard announces its experts.
   */
  async warmUp(): Promise<void> {
    const stream = expertmeshV1().ExpertShardService.service.RunExpertsStream;
    const H = this.compute.config.hiddenSize;
    const formats: readonly [WireDtype, RunExpertsRequest['outputDtype']][] = [['float32', 'TENSOR_DTYPE_FLOAT32'], ['bfloat16', 'TENSOR_DTYPE_BFLOAT16'], ['fp8', 'TENSOR_DTYPE_BFLOAT16']];
    for (const { layer, experts } of this.compute.experts.heldLayers()) {
      if (experts.length === 0) continue;
      // One zero row per held expert (at most 4: a decode step's rows), each naming its expert.
      const rows = Math.min(4, experts.length);
      const pairs = encodePairs({ tokenRows: Int32Array.from({ length: rows }, (_, i) => i), expertIds: Int32Array.from(experts.slice(0, rows)), weights: new Float32Array(rows).fill(1) });
      for (const [wire, outputDtype] of formats) {
        const bytes = stream.requestSerialize({ requestId: 0, modelFingerprint: this.compute.fingerprint, layer, hidden: encodeTensor(new Float32Array(rows * H), rows, H, wire), ...pairs, outputDtype, traceContext: {} });
        const request = decodeRequestMessage(bytes, 0);
        const { response } = await this.compute.run(request, performance.now(), true);
        stream.responseSerialize({ requestId: 0, response });
        encodeResponseMessage(response);
      }
    }
  }

  /** Health turns SERVING (a shard that listened before it had loaded its slot's experts). */
  startServing(): void {
    if (!this.draining) this.setServing(true);
  }

  /**
   * Serves the same health status (and nothing else) in plaintext on a second port, for probes that cannot
   * present a client certificate (kubelet's gRPC probe). Health reveals only SERVING or NOT_SERVING.
   */
  async listenHealth(host: string, port: number): Promise<string> {
    const server = new grpc.Server({ 'grpc.max_concurrent_streams': 16, 'grpc.max_receive_message_length': 4096 });
    this.health.addToServer(server);
    const bound = await new Promise<number>((resolve, reject) =>
      server.bindAsync(hostPort(host, port), grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.healthServer = server;
    return hostPort(host, bound);
  }

  info(): GetShardInfoResponse {
    const { config, fingerprint, experts } = this.compute;
    return {
      shardId: this.shardId,
      modelFingerprint: fingerprint,
      layers: experts.heldLayers().map((l) => ({ layer: l.layer, experts: [...l.experts] })),
      computeDtype: 'float32',
      weightBytes: experts.weightBytes,
      weightFormat: experts.weightFormat,
      residentBytes: process.memoryUsage().rss,
      hiddenSize: config.hiddenSize,
      framesAddress: this.framesAddress,
    };
  }

  /**
   * Drains: health goes NOT_SERVING, new requests are refused with UNAVAILABLE, accepted ones finish
   * and are answered, then streams end and the server closes (forced after `graceMs`).
   */
  async shutdown(graceMs = 10_000): Promise<void> {
    this.draining = true;
    this.heapReturn.stop();
    this.setServing(false);
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    for (const s of this.openStreams) s.end();
    await this.frames?.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    this.healthServer?.forceShutdown();
    await this.compute.close();
  }

  private record(stats: RunStats, span: Span, parent: Context): void {
    const m = this.metrics;
    m.computeSeconds.observe((stats.computeFinishedAt - stats.computeStartedAt) / 1000);
    m.queueSeconds.observe((stats.computeStartedAt - stats.queueStartedAt) / 1000);
    m.receivedBytes.inc(stats.receivedBytes);
    m.sentBytes.inc(stats.sentBytes);
    for (const [expert, n] of stats.expertTokens) m.expertTokens.inc({ layer: String(stats.layer), expert: String(expert) }, n);
    span.setAttributes({ 'expertmesh.tokens': stats.tokens, 'expertmesh.pairs': stats.pairs, 'expertmesh.experts': stats.expertTokens.size, 'expertmesh.bytes_received': stats.receivedBytes, 'expertmesh.bytes_sent': stats.sentBytes });
    // Spans from recorded times: performance.now() is relative to the process's time origin.
    const wall = (t: number): number => performance.timeOrigin + t;
    const ctx = trace.setSpan(parent, span);
    tracer().startSpan('expertmesh.shard.queue_wait', { startTime: wall(stats.queueStartedAt) }, ctx).end(wall(stats.computeStartedAt));
    tracer()
      .startSpan('expertmesh.shard.expert_compute', { startTime: wall(stats.computeStartedAt), attributes: { 'expertmesh.layer': stats.layer, 'expertmesh.experts': stats.expertTokens.size, 'expertmesh.tokens': stats.tokens } }, ctx)
      .end(wall(stats.computeFinishedAt));
  }

  get registry(): ShardMetrics['registry'] {
    return this.metrics.registry;
  }

  /** The expert set the weight-bytes gauge was last set for. */
  private weightsRecordedFor: ShardCompute['experts'] | null = null;

  /** The weight-bytes gauge, current after a plan change swapped the experts (set again only then). */
  private recordWeights(): void {
    const experts = this.compute.experts;
    if (experts === this.weightsRecordedFor) return;
    this.weightsRecordedFor = experts;
    this.metrics.weightBytes.reset();
    this.metrics.weightBytes.set({ format: experts.weightFormat }, experts.weightBytes);
  }

  private setServing(serving: boolean): void {
    const s = serving ? 'SERVING' : 'NOT_SERVING';
    this.health.setStatus('', s);
    this.health.setStatus(SHARD_SERVICE_NAME, s);
  }

  /**
   * Runs one request inside a server span that continues the router's trace (its context travels in
   * the request), with child spans for the queue wait and the expert compute.
   */
  private async accept(request: RunExpertsRequest__Output, signal?: AbortSignal): Promise<RunExpertsResponse> {
    if (this.draining) throw new ShardRequestError(grpc.status.UNAVAILABLE, `shard ${this.shardId} is shutting down: send to another holder`);
    const receivedAt = performance.now();
    this.recordWeights();
    const parent = extractContext(request.traceContext);
    const span = tracer().startSpan('expertmesh.shard.run_experts', { kind: SpanKind.SERVER, attributes: { 'expertmesh.shard': this.shardId, 'expertmesh.layer': request.layer } }, parent);
    this.inFlight++;
    try {
      const { response, stats } = await this.turns.run(() => {
        // The caller gave up (a frames CANCEL, or its connection closed) before its turn: nothing to compute.
        if (signal?.aborted) throw new ShardRequestError(grpc.status.CANCELLED, 'the caller cancelled the request before it ran');
        return this.compute.run(request, receivedAt);
      });
      // Metrics and spans once the answer is handed to the transport (the caller does that in this
      // turn of the loop, before any immediate runs): they are no part of the call's round trip.
      setImmediate(() => {
        this.record(stats, span, parent);
        this.metrics.requests.inc({ outcome: 'ok' });
        span.end();
      });
      return response;
    } catch (e) {
      const err = toShardError(e);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
      this.metrics.requests.inc({ outcome: err.code === grpc.status.INTERNAL ? 'error' : 'refused' });
      span.end();
      throw err;
    } finally {
      this.heapReturn.workDone();
      if (--this.inFlight === 0 && this.idle) {
        this.idle();
        this.idle = null;
      }
    }
  }

  /**
   * One router stream: requests run concurrently and are answered as they finish, at most
   * `maxInFlightPerStream` at a time. Past that, or while the peer does not read its answers, the
   * stream is not read, so HTTP/2 flow control holds the sender back and memory stays bounded.
   */
  private serveStream(call: grpc.ServerDuplexStream<RunExpertsRequest__Output, RunExpertsStreamResponse>): void {
    this.openStreams.add(call);
    const cap = this.options.maxInFlightPerStream ?? DEFAULT_MAX_IN_FLIGHT_PER_STREAM;
    let pending = 0;
    let ended = false;
    let writable = true;
    const throttle = (): void => {
      if (pending >= cap || !writable) call.pause();
      else call.resume();
    };
    const finishIfDone = (): void => {
      if (ended && pending === 0) call.end();
    };
    const send = (msg: RunExpertsStreamResponse): void => {
      if (call.destroyed) return;
      if (!call.write(msg) && writable) {
        writable = false;
        call.once('drain', () => {
          writable = true;
          throttle();
        });
      }
    };
    call.on('data', (request: RunExpertsRequest__Output) => {
      pending++;
      throttle();
      this.accept(request)
        .then((response) => send({ requestId: request.requestId, response }))
        .catch((e: unknown) => {
          const err = toShardError(e);
          send({ requestId: request.requestId, error: { code: err.code, message: err.message } });
        })
        .finally(() => {
          pending--;
          throttle();
          finishIfDone();
        });
    });
    call.on('end', () => {
      ended = true;
      finishIfDone();
    });
    call.on('error', () => undefined); // A router that goes away is not the shard's problem.
    call.on('close', () => this.openStreams.delete(call));
  }
}
