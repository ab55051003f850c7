import type { ModelConfig } from '@expertmesh/model-config';

/** Parameter counts of the parts of a DeepSeek-V3 step, as the engine reads them. */
export function parameterCounts(c: ModelConfig): { densePerToken: number; perExpert: number } {
  const H = c.hiddenSize;
  const q = c.qLoraRank === null ? H * c.numHeads * c.qkHeadDim : H * c.qLoraRank + c.qLoraRank * c.numHeads * c.qkHeadDim;
  const attention = q + H * (c.kvLoraRank + c.qkRopeHeadDim) + c.numHeads * (c.qkNopeHeadDim + c.vHeadDim) * c.kvLoraRank + c.numHeads * c.vHeadDim * H;
  const mlp = (inter: number): number => 3 * H * inter;
  const moeLayers = c.moeLayers.length;
  const denseLayers = c.numLayers - moeLayers;
  const densePerToken =
    c.numLayers * attention + denseLayers * mlp(c.intermediateSize) + moeLayers * (mlp(c.moeIntermediateSize * c.nSharedExperts) + H * c.nRoutedExperts) + c.vocabSize * H;
  return { densePerToken, perExpert: mlp(c.moeIntermediateSize) };
}

/**
 * FLOPs and bytes one decode step of `batch` sequences at context `context` must spend, with the
 * weights read at `bytesPerParameter` (4 for float32; int8/int4 count their codes and scales).
 */
export function decodeStepCost(c: ModelConfig, batch: number, context: number, distinctExpertsPerStep: number, bytesPerParameter = 4): { flops: number; bytes: number } {
  const { densePerToken, perExpert } = parameterCounts(c);
  const D = c.kvLoraRank + c.qkRopeHeadDim;
  const attentionCore = 2 * c.numHeads * context * (D + c.kvLoraRank) * c.numLayers;
  const flops = batch * (2 * densePerToken + 2 * c.numExpertsPerTok * perExpert * c.moeLayers.length + attentionCore);
  const kvBytes = batch * context * D * 4 * c.numLayers;
  const bytes = bytesPerParameter * (densePerToken + distinctExpertsPerStep * perExpert) + kvBytes;
  return { flops, bytes };
}
