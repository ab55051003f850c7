import type { ModelConfig } from '@expertmesh/model-config';
import { open } from 'node:fs/promises';
import { endianness } from 'node:os';
import { bf16FileWeight, NativeProduct, resolveProductKernel, type Bf16Weight, type ResolvedExpertKernel } from '@expertmesh/expert-kernel';
import { f32, floatData, Graph, int32Data, type ExecutionOptions, type WeightData } from '@expertmesh/tensor-ops';
import { buildLmHeadGraph } from './graphs/lm-head-graph.js';

/** The last step of a forward pass: logits = W_lm · RMSNorm(x) for the rows given, and each row's argmax. */
export interface LmHead {
  readonly name: string;
  /** What runs the vocabulary product: onnxruntime's graph, or the native kernel of packages/expert-kernel. */
  readonly kernel: ResolvedExpertKernel;
  /** Bytes of the head held in the native kernel's own storage (0 on onnxruntime, whose session holds its copy). */
  readonly nativeBytes: number;
  /** x [rows, hidden] → logits [rows, vocab] and each row's greedy token (lowest index on ties). */
  run(x: Float32Array, rows: number): Promise<{ logits: Float32Array; argmax: Int32Array }>;
  release(): Promise<void>;
}

/**
 * The LM head on the kernel the execution options ask for (resolveProductKernel with execution.productKernel: `auto`
 * and `native` put it on the native kernel when the addon is built and the head is held as float32 values or
 * int8/int4 codes, or left in the checkpoint as bfloat16, as DeepSeek ships it: read into the kernel's storage and
 * widened as it is read; `onnxruntime`, or a head in another stored format (FP8 with scales), keeps onnxruntime's
 * graph). On onnxruntime a stored head stays mapped from the checkpoint file, in the page cache, where the kernel's
 * page aging can slow a run now and then (docs/benchmarks.md, session 34); the native kernel holds its own copy.
 */
export async function createLmHead(config: ModelConfig, finalNorm: Float32Array, weight: WeightData, execution: ExecutionOptions): Promise<LmHead> {
  if (resolveProductKernel(execution.productKernel ?? execution.expertKernel, weight, { bf16File: true }) === 'native') {
    const held = bf16FileWeight(weight) ? await readBf16(weight) : weight;
    return new NativeLmHead(config, finalNorm, NativeProduct.create('lm_head', held, { threads: execution.intraOpThreads }));
  }
  return new OnnxLmHead(await Graph.create('lm_head', buildLmHeadGraph(config, finalNorm, weight), execution));
}

/** A bfloat16 matrix's bytes from its checkpoint file, as 16-bit values (safetensors is little-endian, as this host). */
async function readBf16(weight: Extract<WeightData, { kind: 'file' }>): Promise<Bf16Weight> {
  if (endianness() !== 'LE') throw new RangeError('lm_head: this host is big-endian and the checkpoint little-endian: run the head on onnxruntime (--expert-kernel onnxruntime)');
  const [rows, cols] = weight.dims as [number, number];
  const length = rows * cols * 2;
  if (weight.file.length !== length) throw new RangeError(`lm_head: ${weight.file.length} bytes in the checkpoint for ${rows}×${cols} bfloat16 values (${length})`);
  // Its own buffer (offset 0): a Uint16Array needs an even byte offset. The kernel copies it; then it is garbage.
  const bytes = Buffer.allocUnsafeSlow(length);
  const file = await open(weight.file.path, 'r');
  try {
    for (let at = 0; at < length; ) {
      const { bytesRead } = await file.read(bytes, at, Math.min(length - at, 1 << 30), weight.file.offset + at);
      if (bytesRead === 0) throw new RangeError(`lm_head: the checkpoint file ${weight.file.path} ends ${length - at} bytes early`);
      at += bytesRead;
    }
  } finally {
    await file.close();
  }
  return { kind: 'bf16', rows, cols, bits: new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols) };
}

class OnnxLmHead implements LmHead {
  readonly kernel = 'onnxruntime';
  readonly nativeBytes = 0;
  constructor(private readonly graph: Graph) {}
  get name(): string {
    return this.graph.name;
  }
  async run(x: Float32Array, rows: number): Promise<{ logits: Float32Array; argmax: Int32Array }> {
    const out = await this.graph.run({ x: f32(x, [rows, x.length / rows]) });
    return { logits: floatData(out.logits, this.name, 'logits'), argmax: int32Data(out.argmax, this.name, 'argmax') };
  }
  release(): Promise<void> {
    return this.graph.release();
  }
}

/**
 * The final RMSNorm here (a few thousand floats a row), then one native product over the vocabulary rows, whose
 * argmax the kernel takes as it goes: no onnxruntime run, and the kernel's storage (on huge pages) is the one copy of
 * the head; the loader's array is not referenced.
 */
class NativeLmHead implements LmHead {
  readonly kernel = 'native';
  readonly name = 'lm_head';
  constructor(
    private readonly config: ModelConfig,
    private readonly finalNorm: Float32Array,
    private readonly product: NativeProduct,
  ) {}
  get nativeBytes(): number {
    return this.product.weightBytes;
  }
  async run(x: Float32Array): Promise<{ logits: Float32Array; argmax: Int32Array }> {
    const { y, argmax } = this.product.run(rmsNormRows(x, this.finalNorm, this.config.rmsNormEps));
    return { logits: y, argmax };
  }
  async release(): Promise<void> {
    this.product.release();
  }
}

/**
 * RMSNorm of each row as onnxruntime's SimplifiedLayerNormalization computes it in float32 (stash_type 1): the mean
 * of squares, 1 / sqrt(mean + eps), then x · inv · w, each product rounded to float32. The sum of squares is kept in
 * a double here (within the float64 reference's bound either way).
 */
export function rmsNormRows(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  const H = w.length;
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length; r += H) {
    let sum = 0;
    for (let i = 0; i < H; i++) sum += x[r + i]! * x[r + i]!;
    const inv = Math.fround(1 / Math.sqrt(Math.fround(Math.fround(sum / H) + eps)));
    for (let i = 0; i < H; i++) out[r + i] = Math.fround(x[r + i]! * inv) * w[i]!;
  }
  return out;
}
