// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto


export interface RequestError {
  /**
   * A gRPC status code (3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 14 UNAVAILABLE, 13 INTERNAL).
   */
  'code'?: (number);
  'message'?: (string);
}

export interface RequestError__Output {
  /**
   * A gRPC status code (3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 14 UNAVAILABLE, 13 INTERNAL).
   */
  'code': (number);
  'message': (string);
}
