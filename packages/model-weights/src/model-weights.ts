import type { ModelConfig } from '@expertmesh/model-config';
import { readLinearWeight, type SafetensorsCheckpoint } from '@expertmesh/weights';
import type { SwigluWeights } from '@expertmesh/tensor-ops';
import {
  attentionNames,
  denseMlpPrefix,
  EMBED_TOKENS,
  FINAL_NORM,
  layerNormNames,
  LM_HEAD,
  mlpNames,
  routedExpertPrefix,
  routerNames,
  sharedExpertsPrefix,
} from './tensor-names.js';

/**
 * Reads the weights the model needs from a checkpoint into float32, checking every shape against
 * config.json. FP8 weights are dequantised here with their block scales; nothing downstream knows
 * which format the checkpoint used.
 */
export class WeightShapeError extends Error {
  override readonly name = 'WeightShapeError';
  constructor(
    readonly tensor: string,
    readonly file: string,
    readonly expected: readonly number[],
    readonly actual: readonly number[],
  ) {
    super(
      `tensor "${tensor}" in ${file} has shape [${actual.join(', ')}] but config.json implies [${expected.join(', ')}]: ` +
        'the checkpoint and its config.json do not belong together',
    );
  }
}

export interface AttentionWeights {
  readonly inputNorm: Float32Array;
  /** q_proj when q_lora_rank is null, otherwise the low-rank pair with its norm. */
  readonly q: { readonly kind: 'full'; readonly proj: Float32Array } | { readonly kind: 'lowRank'; readonly a: Float32Array; readonly norm: Float32Array; readonly b: Float32Array };
  readonly kvA: Float32Array;
  readonly kvANorm: Float32Array;
  readonly kvB: Float32Array;
  readonly o: Float32Array;
}

export interface RouterWeights {
  readonly gate: Float32Array;
  readonly scoreCorrectionBias: Float32Array;
}

export type FfnWeights =
  | { readonly kind: 'dense'; readonly mlp: SwigluWeights }
  | { readonly kind: 'moe'; readonly router: RouterWeights; readonly shared: SwigluWeights | null };

export interface LayerWeights {
  readonly attention: AttentionWeights;
  readonly postAttentionNorm: Float32Array;
  readonly ffn: FfnWeights;
}

export class WeightReader {
  constructor(
    private readonly checkpoint: SafetensorsCheckpoint,
    private readonly config: ModelConfig,
  ) {}

  /** A tensor as float32 with its shape checked; FP8 is dequantised with its `weight_scale_inv`. */
  async tensor(name: string, shape: readonly number[]): Promise<Float32Array> {
    const info = this.checkpoint.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new WeightShapeError(name, info.file, shape, info.shape);
    }
    return readLinearWeight(this.checkpoint, name, this.config.quantization?.weightBlockSize ?? null);
  }

  embedding(): Promise<Float32Array> {
    return this.tensor(EMBED_TOKENS, [this.config.vocabSize, this.config.hiddenSize]);
  }

  finalNorm(): Promise<Float32Array> {
    return this.tensor(FINAL_NORM, [this.config.hiddenSize]);
  }

  lmHead(): Promise<Float32Array> {
    return this.tensor(LM_HEAD, [this.config.vocabSize, this.config.hiddenSize]);
  }

  async layer(layer: number): Promise<LayerWeights> {
    const c = this.config;
    const norms = layerNormNames(layer);
    return {
      attention: await this.attention(layer),
      postAttentionNorm: await this.tensor(norms.postAttention, [c.hiddenSize]),
      ffn: c.moeLayers.includes(layer)
        ? {
            kind: 'moe',
            router: await this.router(layer),
            shared: c.nSharedExperts > 0 ? await this.swiglu(sharedExpertsPrefix(layer), c.moeIntermediateSize * c.nSharedExperts) : null,
          }
        : { kind: 'dense', mlp: await this.swiglu(denseMlpPrefix(layer), c.intermediateSize) },
    };
  }

  routedExpert(layer: number, expert: number): Promise<SwigluWeights> {
    return this.swiglu(routedExpertPrefix(layer, expert), this.config.moeIntermediateSize);
  }

  private async attention(layer: number): Promise<AttentionWeights> {
    const c = this.config;
    const n = attentionNames(layer);
    const qOut = c.numHeads * c.qkHeadDim;
    const q: AttentionWeights['q'] =
      c.qLoraRank === null
        ? { kind: 'full', proj: await this.tensor(n.qProj, [qOut, c.hiddenSize]) }
        : {
            kind: 'lowRank',
            a: await this.tensor(n.qAProj, [c.qLoraRank, c.hiddenSize]),
            norm: await this.tensor(n.qANorm, [c.qLoraRank]),
            b: await this.tensor(n.qBProj, [qOut, c.qLoraRank]),
          };
    return {
      inputNorm: await this.tensor(layerNormNames(layer).input, [c.hiddenSize]),
      q,
      kvA: await this.tensor(n.kvAProj, [c.kvLoraRank + c.qkRopeHeadDim, c.hiddenSize]),
      kvANorm: await this.tensor(n.kvANorm, [c.kvLoraRank]),
      kvB: await this.tensor(n.kvBProj, [c.numHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank]),
      o: await this.tensor(n.oProj, [c.hiddenSize, c.numHeads * c.vHeadDim]),
    };
  }

  private async router(layer: number): Promise<RouterWeights> {
    const c = this.config;
    const n = routerNames(layer);
    return {
      gate: await this.tensor(n.gate, [c.nRoutedExperts, c.hiddenSize]),
      scoreCorrectionBias: await this.tensor(n.scoreCorrectionBias, [c.nRoutedExperts]),
    };
  }

  private async swiglu(prefix: string, intermediate: number): Promise<SwigluWeights> {
    const hidden = this.config.hiddenSize;
    const names = mlpNames(prefix);
    return {
      gate: await this.tensor(names.gate, [intermediate, hidden]),
      up: await this.tensor(names.up, [intermediate, hidden]),
      down: await this.tensor(names.down, [hidden, intermediate]),
      hidden,
      intermediate,
    };
  }
}
