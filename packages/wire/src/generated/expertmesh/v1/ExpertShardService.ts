// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { GetShardInfoRequest as _expertmesh_v1_GetShardInfoRequest, GetShardInfoRequest__Output as _expertmesh_v1_GetShardInfoRequest__Output } from '../../expertmesh/v1/GetShardInfoRequest.js';
import type { GetShardInfoResponse as _expertmesh_v1_GetShardInfoResponse, GetShardInfoResponse__Output as _expertmesh_v1_GetShardInfoResponse__Output } from '../../expertmesh/v1/GetShardInfoResponse.js';
import type { RunExpertsRequest as _expertmesh_v1_RunExpertsRequest, RunExpertsRequest__Output as _expertmesh_v1_RunExpertsRequest__Output } from '../../expertmesh/v1/RunExpertsRequest.js';
import type { RunExpertsResponse as _expertmesh_v1_RunExpertsResponse, RunExpertsResponse__Output as _expertmesh_v1_RunExpertsResponse__Output } from '../../expertmesh/v1/RunExpertsResponse.js';
import type { RunExpertsStreamResponse as _expertmesh_v1_RunExpertsStreamResponse, RunExpertsStreamResponse__Output as _expertmesh_v1_RunExpertsStreamResponse__Output } from '../../expertmesh/v1/RunExpertsStreamResponse.js';

/**
 * An expert shard holds some routed experts of some MoE layers and runs them. The router sends each
 * token to a shard once, with every expert it chose there, and gets back one weighted sum per token.
 */
export interface ExpertShardServiceClient extends grpc.Client {
  /**
   * What this shard is and holds.
   */
  GetShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  GetShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  GetShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  GetShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  /**
   * What this shard is and holds.
   */
  getShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  getShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  getShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  getShardInfo(argument: _expertmesh_v1_GetShardInfoRequest, callback: grpc.requestCallback<_expertmesh_v1_GetShardInfoResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * One MoE layer's work for one batch.
   */
  RunExperts(argument: _expertmesh_v1_RunExpertsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  RunExperts(argument: _expertmesh_v1_RunExpertsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  RunExperts(argument: _expertmesh_v1_RunExpertsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  RunExperts(argument: _expertmesh_v1_RunExpertsRequest, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  /**
   * One MoE layer's work for one batch.
   */
  runExperts(argument: _expertmesh_v1_RunExpertsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  runExperts(argument: _expertmesh_v1_RunExpertsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  runExperts(argument: _expertmesh_v1_RunExpertsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  runExperts(argument: _expertmesh_v1_RunExpertsRequest, callback: grpc.requestCallback<_expertmesh_v1_RunExpertsResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * The same on a long-lived stream: requests and responses are matched by request_id and may
   * complete out of order. A bad request gets a response carrying `error`; the stream stays open.
   */
  RunExpertsStream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsStreamResponse__Output>;
  RunExpertsStream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsStreamResponse__Output>;
  /**
   * The same on a long-lived stream: requests and responses are matched by request_id and may
   * complete out of order. A bad request gets a response carrying `error`; the stream stays open.
   */
  runExpertsStream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsStreamResponse__Output>;
  runExpertsStream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsStreamResponse__Output>;
  
}

/**
 * An expert shard holds some routed experts of some MoE layers and runs them. The router sends each
 * token to a shard once, with every expert it chose there, and gets back one weighted sum per token.
 */
export interface ExpertShardServiceHandlers extends grpc.UntypedServiceImplementation {
  /**
   * What this shard is and holds.
   */
  GetShardInfo: grpc.handleUnaryCall<_expertmesh_v1_GetShardInfoRequest__Output, _expertmesh_v1_GetShardInfoResponse>;
  
  /**
   * One MoE layer's work for one batch.
   */
  RunExperts: grpc.handleUnaryCall<_expertmesh_v1_RunExpertsRequest__Output, _expertmesh_v1_RunExpertsResponse>;
  
  /**
   * The same on a long-lived stream: requests and responses are matched by request_id and may
   * complete out of order. A bad request gets a response carrying `error`; the stream stays open.
   */
  RunExpertsStream: grpc.handleBidiStreamingCall<_expertmesh_v1_RunExpertsRequest__Output, _expertmesh_v1_RunExpertsStreamResponse>;
  
}

export interface ExpertShardServiceDefinition extends grpc.ServiceDefinition {
  GetShardInfo: MethodDefinition<_expertmesh_v1_GetShardInfoRequest, _expertmesh_v1_GetShardInfoResponse, _expertmesh_v1_GetShardInfoRequest__Output, _expertmesh_v1_GetShardInfoResponse__Output>
  RunExperts: MethodDefinition<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsResponse, _expertmesh_v1_RunExpertsRequest__Output, _expertmesh_v1_RunExpertsResponse__Output>
  RunExpertsStream: MethodDefinition<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsStreamResponse, _expertmesh_v1_RunExpertsRequest__Output, _expertmesh_v1_RunExpertsStreamResponse__Output>
}
