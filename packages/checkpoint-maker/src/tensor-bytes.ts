import { float32ToBf16Bytes, loopTurn, quantizeBlockFp8, type LazyTensor } from '@expertmesh/weights';
import { RandomRows, randomValues } from './random-values.js';
import type { PlannedTensor } from './tensor-plan.js';

/** About this many values are produced between two turns of the event loop (tens of ms of work). */
export const CHUNK_VALUES = 1 << 20;

/**
 * The tensor's random values as chunks of whole rows (whole row blocks of `unit` rows), with a loop turn
 * before each: a real-width projection takes seconds to generate and quantise, which in one piece held
 * the process (and a test worker's RPC to its runner) for as long.
 */
async function* randomChunks(t: PlannedTensor, seed: number, unit = 1): AsyncGenerator<Float32Array> {
  const rows = new RandomRows(t, seed);
  const perChunk = Math.max(unit, Math.floor(CHUNK_VALUES / rows.cols / unit) * unit);
  while (rows.remaining > 0) {
    await loopTurn();
    yield rows.next(perChunk);
  }
}

async function* mapChunks<T>(chunks: AsyncIterable<T>, f: (chunk: T) => Uint8Array): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) yield f(chunk);
}

/**
 * What the planned tensor `t` is stored as (an FP8 weight and its block scales, or one tensor), each made
 * when the writer reaches it, a chunk of rows at a time (see randomChunks): values depend only on the seed
 * and the tensor's name, never on the chunking.
 */
export function encodeTensor(t: PlannedTensor, seed: number, dtype: 'float32' | 'bfloat16', fp8Block: readonly [number, number] | null, hot: { experts: readonly number[]; bias: number }): LazyTensor[] {
  const shape = [...t.shape];
  if (t.role === 'bias') {
    const values = (): Float32Array => {
      const v = randomValues(t, seed);
      for (const e of hot.experts) v[e]! += hot.bias;
      return v;
    };
    return [{ name: t.name, dtype: 'F32', shape, data: () => asBytes(values()) }];
  }
  if (t.role === 'linear' && fp8Block) {
    const [rows, cols] = t.shape as readonly [number, number];
    const [blockRows, blockCols] = fp8Block;
    const scaleShape = [Math.ceil(rows / blockRows), Math.ceil(cols / blockCols)];
    // Quantised a chunk of whole row blocks at a time (a block never spans two chunks, so codes and scales
    // are those of the whole tensor); the weight's chunks leave the scales behind for the tensor after it.
    const scaleInv = new Float32Array(scaleShape[0]! * scaleShape[1]!);
    let scalesDone = false;
    async function* codes(): AsyncGenerator<Uint8Array> {
      let at = 0;
      for await (const values of randomChunks(t, seed, blockRows)) {
        const q = quantizeBlockFp8(values, values.length / cols, cols, blockRows, blockCols);
        scaleInv.set(q.scaleInv, at);
        at += q.scaleInv.length;
        yield q.codes;
      }
      scalesDone = true;
    }
    const scaleName = t.name.replace(/\.weight$/, '.weight_scale_inv');
    return [
      { name: t.name, dtype: 'F8_E4M3', shape, data: codes },
      {
        name: scaleName,
        dtype: 'F32',
        shape: scaleShape,
        data: async () => {
          // Written after the weight, so normally already there; otherwise quantise once more for them.
          if (!scalesDone) for await (const _ of codes());
          return asBytes(scaleInv);
        },
      },
    ];
  }
  const encode = dtype === 'float32' ? (v: Float32Array): Uint8Array => asBytes(v) : float32ToBf16Bytes;
  return [{ name: t.name, dtype: dtype === 'float32' ? 'F32' : 'BF16', shape, data: () => mapChunks(randomChunks(t, seed), encode) }];
}

function asBytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
