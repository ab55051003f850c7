// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto

import type { RunExpertsResponse as _expertmesh_v1_RunExpertsResponse, RunExpertsResponse__Output as _expertmesh_v1_RunExpertsResponse__Output } from '../../expertmesh/v1/RunExpertsResponse.js';
import type { RequestError as _expertmesh_v1_RequestError, RequestError__Output as _expertmesh_v1_RequestError__Output } from '../../expertmesh/v1/RequestError.js';
import type { Long } from '@grpc/proto-loader';

/**
 * Stream form of a response: the result or, for a request the shard refused, why.
 */
export interface RunExpertsStreamResponse {
  'requestId'?: (number | string | Long);
  'response'?: (_expertmesh_v1_RunExpertsResponse | null);
  'error'?: (_expertmesh_v1_RequestError | null);
  'result'?: "response"|"error";
}

/**
 * Stream form of a response: the result or, for a request the shard refused, why.
 */
export interface RunExpertsStreamResponse__Output {
  'requestId': (number);
  'response'?: (_expertmesh_v1_RunExpertsResponse__Output | null);
  'error'?: (_expertmesh_v1_RequestError__Output | null);
  'result'?: "response"|"error";
}
