// Original file: ../../proto/expertmesh/v1/expert_shard_service.proto


export interface LayerExperts {
  'layer'?: (number);
  'experts'?: (number)[];
}

export interface LayerExperts__Output {
  'layer': (number);
  'experts': (number)[];
}
