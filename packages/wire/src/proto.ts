import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/expert_shard_service.js';

/** Where the .proto files live (the repository's proto/ folder). */
export const PROTO_ROOT = join(import.meta.dirname, '..', '..', '..', 'proto');

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

/**
 * Channel options for both ends: batches of hidden states exceed grpc's 4 MiB default (a 512-token
 * prefill chunk of a 7168-wide model is 14 MiB in float32), and keepalives find dead peers.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024 * 1024;
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // Receive window of client connections (64 KiB by default, less than one batch of hidden states, so
  // every response would wait for a WINDOW_UPDATE round trip).
  'grpc-node.flow_control_window': 64 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_time_between_pings_ms': 5_000,
  'grpc.http2.max_pings_without_data': 0,
};
