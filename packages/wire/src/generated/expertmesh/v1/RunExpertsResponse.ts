// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto

import type { Tensor as _expertmesh_v1_Tensor, Tensor__Output as _expertmesh_v1_Tensor__Output } from '../../expertmesh/v1/Tensor.js';
import type { Long } from '@grpc/proto-loader';

export interface RunExpertsResponse {
  'requestId'?: (number | string | Long);
  /**
   * Σ weight × expert(hidden[row]) over the row's pairs, [tokens, hidden_size].
   */
  'output'?: (_expertmesh_v1_Tensor | null);
  /**
   * Time the shard spent computing, for tracing the split between network and compute.
   */
  'computeMicros'?: (number | string | Long);
  'queueMicros'?: (number | string | Long);
}

export interface RunExpertsResponse__Output {
  'requestId': (number);
  /**
   * Σ weight × expert(hidden[row]) over the row's pairs, [tokens, hidden_size].
   */
  'output': (_expertmesh_v1_Tensor__Output | null);
  /**
   * Time the shard spent computing, for tracing the split between network and compute.
   */
  'computeMicros': (number);
  'queueMicros': (number);
}
