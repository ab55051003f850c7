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
   * Bytes of expert weights held, and resident memory of the process.
   */
  'weightBytes'?: (number | string | Long);
  'residentBytes'?: (number | string | Long);
  'hiddenSize'?: (number);
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
   * Bytes of expert weights held, and resident memory of the process.
   */
  'weightBytes': (number);
  'residentBytes': (number);
  'hiddenSize': (number);
}
