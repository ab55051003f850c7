import type { ModelConfig, YarnScaling } from './model-config.js';

/** YaRN's attention temperature term (HF `yarn_get_mscale`). */
export function yarnGetMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

function yarnCorrectionDim(numRotations: number, dim: number, base: number, maxPositions: number): number {
  return (dim * Math.log(maxPositions / (numRotations * 2 * Math.PI))) / (2 * Math.log(base));
}

export interface RotaryParameters {
  /** One frequency per rotary pair (qk_rope_head_dim / 2 values). */
  readonly invFreq: Float64Array;
  /** Multiplies cos and sin (YaRN's mscale / mscale_all_dim ratio; 1 without YaRN). */
  readonly cosSinScale: number;
}

/**
 * Rotary frequencies for the decoupled RoPE key, with YaRN interpolation when configured:
 * low frequencies are divided by `factor`, high ones kept, a linear ramp between.
 */
export function rotaryParameters(config: Pick<ModelConfig, 'qkRopeHeadDim' | 'ropeTheta' | 'ropeScaling'>): RotaryParameters {
  const dim = config.qkRopeHeadDim;
  const base = config.ropeTheta;
  const half = dim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(base, (2 * i) / dim);
  const yarn = config.ropeScaling;
  if (!yarn) return { invFreq, cosSinScale: 1 };
  applyYarn(invFreq, yarn, dim, base);
  return { invFreq, cosSinScale: yarnGetMscale(yarn.factor, yarn.mscale) / yarnGetMscale(yarn.factor, yarn.mscaleAllDim) };
}

function applyYarn(invFreq: Float64Array, yarn: YarnScaling, dim: number, base: number): void {
  const low = Math.max(Math.floor(yarnCorrectionDim(yarn.betaFast, dim, base, yarn.originalMaxPositionEmbeddings)), 0);
  let high = Math.min(Math.ceil(yarnCorrectionDim(yarn.betaSlow, dim, base, yarn.originalMaxPositionEmbeddings)), dim - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < invFreq.length; i++) {
    const extrapolated = invFreq[i]!;
    const interpolated = extrapolated / yarn.factor;
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const keepExtrapolated = 1 - ramp;
    invFreq[i] = interpolated * (1 - keepExtrapolated) + extrapolated * keepExtrapolated;
  }
}

/** Softmax scale of MLA: 1/sqrt(qk_head_dim), times YaRN's mscale² when YaRN is on. */
export function attentionSoftmaxScale(config: Pick<ModelConfig, 'qkHeadDim' | 'ropeScaling'>): number {
  const base = 1 / Math.sqrt(config.qkHeadDim);
  const yarn = config.ropeScaling;
  if (!yarn) return base;
  const m = yarnGetMscale(yarn.factor, yarn.mscaleAllDim);
  return base * m * m;
}
