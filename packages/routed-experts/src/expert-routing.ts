/**
 * Which experts each token uses and with what weight: k entries per token, row-major [T, k]
 * (the model's graph chooses them; see @expertmesh/model's routing graph).
 */
export interface ExpertRouting {
  readonly numTokens: number;
  readonly topK: number;
  readonly expertIds: Int32Array;
  readonly weights: Float32Array;
}

/**
 * The same choice as flat (token row, expert, weight) pairs: the form experts are run in, and the
 * form a shard receives (only the pairs of experts it holds, rows renumbered to the tokens sent).
 */
export interface ExpertPairs {
  readonly tokenRows: Int32Array;
  readonly expertIds: Int32Array;
  readonly weights: Float32Array;
}

export function routingToPairs(routing: ExpertRouting): ExpertPairs {
  const n = routing.numTokens * routing.topK;
  const tokenRows = new Int32Array(n);
  for (let i = 0; i < n; i++) tokenRows[i] = Math.floor(i / routing.topK);
  return { tokenRows, expertIds: routing.expertIds, weights: routing.weights };
}
