import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { ExpertShardServiceClient as _expertmesh_v1_ExpertShardServiceClient, ExpertShardServiceDefinition as _expertmesh_v1_ExpertShardServiceDefinition } from './expertmesh/v1/ExpertShardService.js';
import type { GetShardInfoRequest as _expertmesh_v1_GetShardInfoRequest, GetShardInfoRequest__Output as _expertmesh_v1_GetShardInfoRequest__Output } from './expertmesh/v1/GetShardInfoRequest.js';
import type { GetShardInfoResponse as _expertmesh_v1_GetShardInfoResponse, GetShardInfoResponse__Output as _expertmesh_v1_GetShardInfoResponse__Output } from './expertmesh/v1/GetShardInfoResponse.js';
import type { LayerExperts as _expertmesh_v1_LayerExperts, LayerExperts__Output as _expertmesh_v1_LayerExperts__Output } from './expertmesh/v1/LayerExperts.js';
import type { RequestError as _expertmesh_v1_RequestError, RequestError__Output as _expertmesh_v1_RequestError__Output } from './expertmesh/v1/RequestError.js';
import type { RunExpertsRequest as _expertmesh_v1_RunExpertsRequest, RunExpertsRequest__Output as _expertmesh_v1_RunExpertsRequest__Output } from './expertmesh/v1/RunExpertsRequest.js';
import type { RunExpertsResponse as _expertmesh_v1_RunExpertsResponse, RunExpertsResponse__Output as _expertmesh_v1_RunExpertsResponse__Output } from './expertmesh/v1/RunExpertsResponse.js';
import type { RunExpertsStreamResponse as _expertmesh_v1_RunExpertsStreamResponse, RunExpertsStreamResponse__Output as _expertmesh_v1_RunExpertsStreamResponse__Output } from './expertmesh/v1/RunExpertsStreamResponse.js';
import type { Tensor as _expertmesh_v1_Tensor, Tensor__Output as _expertmesh_v1_Tensor__Output } from './expertmesh/v1/Tensor.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  expertmesh: {
    v1: {
      /**
       * An expert shard holds some routed experts of some MoE layers and runs them. The router sends each
       * token to a shard once, with every expert it chose there, and gets back one weighted sum per token.
       */
      ExpertShardService: SubtypeConstructor<typeof grpc.Client, _expertmesh_v1_ExpertShardServiceClient> & { service: _expertmesh_v1_ExpertShardServiceDefinition }
      GetShardInfoRequest: MessageTypeDefinition<_expertmesh_v1_GetShardInfoRequest, _expertmesh_v1_GetShardInfoRequest__Output>
      GetShardInfoResponse: MessageTypeDefinition<_expertmesh_v1_GetShardInfoResponse, _expertmesh_v1_GetShardInfoResponse__Output>
      LayerExperts: MessageTypeDefinition<_expertmesh_v1_LayerExperts, _expertmesh_v1_LayerExperts__Output>
      RequestError: MessageTypeDefinition<_expertmesh_v1_RequestError, _expertmesh_v1_RequestError__Output>
      RunExpertsRequest: MessageTypeDefinition<_expertmesh_v1_RunExpertsRequest, _expertmesh_v1_RunExpertsRequest__Output>
      RunExpertsResponse: MessageTypeDefinition<_expertmesh_v1_RunExpertsResponse, _expertmesh_v1_RunExpertsResponse__Output>
      RunExpertsStreamResponse: MessageTypeDefinition<_expertmesh_v1_RunExpertsStreamResponse, _expertmesh_v1_RunExpertsStreamResponse__Output>
      Tensor: MessageTypeDefinition<_expertmesh_v1_Tensor, _expertmesh_v1_Tensor__Output>
      TensorDtype: EnumTypeDefinition
    }
  }
}

