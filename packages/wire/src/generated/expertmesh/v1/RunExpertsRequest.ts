// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto

import type { Tensor as _expertmesh_v1_Tensor, Tensor__Output as _expertmesh_v1_Tensor__Output } from '../../expertmesh/v1/Tensor.js';
import type { TensorDtype as _expertmesh_v1_TensorDtype, TensorDtype__Output as _expertmesh_v1_TensorDtype__Output } from '../../expertmesh/v1/TensorDtype.js';
import type { Long } from '@grpc/proto-loader';

export interface RunExpertsRequest {
  /**
   * Matches a response to its request on a stream; free for unary calls.
   */
  'requestId'?: (number | string | Long);
  /**
   * The router's model fingerprint; a shard of another model refuses the request.
   */
  'modelFingerprint'?: (string);
  /**
   * MoE layer index (model.layers.{layer}).
   */
  'layer'?: (number);
  /**
   * Hidden states of the tokens routed here, [tokens, hidden_size]: the post-attention RMSNorm
   * output of the layer.
   */
  'hidden'?: (_expertmesh_v1_Tensor | null);
  /**
   * (token, expert, weight) pairs, all of the same length: int32 LE token rows into `hidden`,
   * int32 LE expert ids, float32 LE gate weights.
   */
  'pairTokenRows'?: (Buffer | Uint8Array | string);
  'pairExpertIds'?: (Buffer | Uint8Array | string);
  'pairWeights'?: (Buffer | Uint8Array | string);
  /**
   * Dtype of the returned sums: FLOAT32 or BFLOAT16 (UNSPECIFIED means BFLOAT16).
   */
  'outputDtype'?: (_expertmesh_v1_TensorDtype);
  /**
   * W3C trace context (traceparent, tracestate) of the router's span for this call: per message,
   * because a stream's metadata is sent once while its requests belong to different steps.
   */
  'traceContext'?: ({[key: string]: string});
  /**
   * Ignored by receivers: filler a sender may put before `hidden` (zero to three bytes, the field written or
   * not), writing `hidden` last and its values last inside it, so that the values start at a multiple of 4
   * bytes into the message. A shard then reads float32 hidden states where they arrived instead of copying
   * them to an aligned buffer first (the router's frames do; messages without it are read as before).
   */
  'hiddenAlignment'?: (Buffer | Uint8Array | string);
}

export interface RunExpertsRequest__Output {
  /**
   * Matches a response to its request on a stream; free for unary calls.
   */
  'requestId': (number);
  /**
   * The router's model fingerprint; a shard of another model refuses the request.
   */
  'modelFingerprint': (string);
  /**
   * MoE layer index (model.layers.{layer}).
   */
  'layer': (number);
  /**
   * Hidden states of the tokens routed here, [tokens, hidden_size]: the post-attention RMSNorm
   * output of the layer.
   */
  'hidden': (_expertmesh_v1_Tensor__Output | null);
  /**
   * (token, expert, weight) pairs, all of the same length: int32 LE token rows into `hidden`,
   * int32 LE expert ids, float32 LE gate weights.
   */
  'pairTokenRows': (Buffer);
  'pairExpertIds': (Buffer);
  'pairWeights': (Buffer);
  /**
   * Dtype of the returned sums: FLOAT32 or BFLOAT16 (UNSPECIFIED means BFLOAT16).
   */
  'outputDtype': (_expertmesh_v1_TensorDtype__Output);
  /**
   * W3C trace context (traceparent, tracestate) of the router's span for this call: per message,
   * because a stream's metadata is sent once while its requests belong to different steps.
   */
  'traceContext': ({[key: string]: string});
  /**
   * Ignored by receivers: filler a sender may put before `hidden` (zero to three bytes, the field written or
   * not), writing `hidden` last and its values last inside it, so that the values start at a multiple of 4
   * bytes into the message. A shard then reads float32 hidden states where they arrived instead of copying
   * them to an aligned buffer first (the router's frames do; messages without it are read as before).
   */
  'hiddenAlignment': (Buffer);
}
