// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto

import type { LayerExperts as _expertmesh_v1_LayerExperts, LayerExperts__Output as _expertmesh_v1_LayerExperts__Output } from '../../expertmesh/v1/LayerExperts.js';
import type { Long } from '@grpc/proto-loader';

export interface GetShardInfoResponse {
  'shardId'?: (string);
  'modelFingerprint'?: (string);
  'layers'?: (_expertmesh_v1_LayerExperts)[];
  /**
   * Dtype the experts compute in ("float32").
   */
  'computeDtype'?: (string);
  /**
   * Bytes of expert weights held (in weight_format), and resident memory of the process.
   */
  'weightBytes'?: (number | string | Long);
  'residentBytes'?: (number | string | Long);
  'hiddenSize'?: (number);
  /**
   * The format the expert weights are held in: "float8e4m3fn+block128x128", "bfloat16", "float32".
   */
  'weightFormat'?: (string);
  /**
   * The shard's frames endpoint (the expert-compute hot path without HTTP/2), as it is bound; empty
   * when it serves gRPC only. A router dials its port on the host it reached this shard at.
   */
  'framesAddress'?: (string);
}

export interface GetShardInfoResponse__Output {
  'shardId': (string);
  'modelFingerprint': (string);
  'layers': (_expertmesh_v1_LayerExperts__Output)[];
  /**
   * Dtype the experts compute in ("float32").
   */
  'computeDtype': (string);
  /**
   * Bytes of expert weights held (in weight_format), and resident memory of the process.
   */
  'weightBytes': (number);
  'residentBytes': (number);
  'hiddenSize': (number);
  /**
   * The format the expert weights are held in: "float8e4m3fn+block128x128", "bfloat16", "float32".
   */
  'weightFormat': (string);
  /**
   * The shard's frames endpoint (the expert-compute hot path without HTTP/2), as it is bound; empty
   * when it serves gRPC only. A router dials its port on the host it reached this shard at.
   */
  'framesAddress': (string);
}
