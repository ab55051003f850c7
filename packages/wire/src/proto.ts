import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { installRoot } from '@expertmesh/process-lifecycle';
import type { ProtoGrpcType } from './generated/expert_shard_service.js';

/** Where the .proto files live (the install's proto/ folder, from the sources or the compiled build). */
export const PROTO_ROOT = join(installRoot(), 'proto');

/** Must match the flags `npm run proto:gen` generates the TypeScript types with. */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let loaded: ProtoGrpcType | null = null;

/** The expertmesh.v1 package, loaded once per process. */
export function expertmeshV1(): ProtoGrpcType['expertmesh']['v1'] {
  loaded ??= grpc.loadPackageDefinition(protoLoader.loadSync('expertmesh/v1/expert_shard_service.proto', LOADER_OPTIONS)) as unknown as ProtoGrpcType;
  return loaded.expertmesh.v1;
}

/** What one RunExperts call may carry, from the model's sizes: the bound behind every size limit of the protocol. */
export interface CallLimits {
  readonly hiddenSize: number;
  /** Tokens (rows of `hidden`) per call at most. */
  readonly maxTokensPerCall: number;
  /** Experts chosen per token (top-k): at most tokens × top-k pairs per call. */
  readonly expertsPerToken: number;
}

/** Tokens per call a shard accepts unless told otherwise (--max-tokens-per-call): well above a router step (512 by default). */
export const DEFAULT_MAX_TOKENS_PER_CALL = 8192;

/** Room for the small fields (fingerprint, trace context, shape) and protobuf framing. */
const ENVELOPE_BYTES = 64 * 1024;

/**
 * The largest message a call within `limits` needs, in either direction: float32 hidden states (the
 * widest wire dtype) plus FP8 row scales and the pair fields. grpc refuses anything larger before
 * it is buffered, so a peer cannot make a process allocate more than this per message.
 */
export function maxCallMessageBytes(limits: CallLimits): number {
  const t = limits.maxTokensPerCall;
  return t * limits.hiddenSize * 4 + t * 4 + t * limits.expertsPerToken * 12 + ENVELOPE_BYTES;
}

/**
 * Channel options for both ends, with messages bounded by `maxMessageBytes`: batches of hidden
 * states exceed grpc's 4 MiB default (a 512-token prefill chunk of a 7168-wide model is 14 MiB in
 * float32), and keepalives find dead peers.
 */
export function channelOptions(maxMessageBytes: number): grpc.ChannelOptions {
  return {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    // Receive window of client connections (64 KiB by default, less than one batch of hidden states, so
    // every response would wait for a WINDOW_UPDATE round trip).
    'grpc-node.flow_control_window': 64 * 1024 * 1024,
    'grpc.keepalive_time_ms': 10_000,
    // gRPC's own default. onnxruntime-node runs a session on the event loop's thread, so a long run
    // (a 512-token prefill through a real-width dense MLP takes seconds on a CPU) delays the ping's
    // answer; 5 s dropped healthy connections to real-width shards.
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_time_between_pings_ms': 5_000,
    'grpc.http2.max_pings_without_data': 0,
  };
}

/** For clients that do not know the model (tools, tests): 256 MiB. Servers use channelOptions(maxCallMessageBytes(…)). */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
export const CHANNEL_OPTIONS: grpc.ChannelOptions = channelOptions(MAX_MESSAGE_BYTES);
