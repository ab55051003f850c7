// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto


export interface GetShardInfoRequest {
}

export interface GetShardInfoRequest__Output {
}
