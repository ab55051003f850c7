import { embeddingRows, OnnxModelBuilder, type BuiltModel, type WeightData } from '@expertmesh/tensor-ops';

/** x = embed_tokens[ids]: a gather, so only the rows of the step's tokens are ever widened. */
export function buildEmbeddingGraph(embedding: WeightData): BuiltModel {
  const b = new OnnxModelBuilder('embedding');
  const ids = b.input('ids', 'int64', ['T']);
  b.alias(embeddingRows(b, ids, embedding, 'embed_tokens'), 'x');
  b.output('x', 'float32', ['T', embedding.dims[1]!]);
  return b.build();
}
