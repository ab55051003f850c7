import { describe, expect, it } from 'vitest';
import { float32ToBf16Bytes, quantizeBlockFp8, type LazyTensor } from '@expertmesh/weights';
import { randomValues, type PlannedTensor } from '../src/index.js';
import { CHUNK_VALUES, encodeTensor } from '../src/tensor-bytes.js';

const seed = 7;
const none = { experts: [], bias: 0 };

/** A tensor's data chunk by chunk, with the turns of the event loop (check phases) that came before each chunk. */
async function chunksWithTurns(t: LazyTensor): Promise<{ bytes: Uint8Array; chunks: Uint8Array[]; turnsBefore: number[] }> {
  let turns = 0;
  let ticking = true;
  const tick = (): void => {
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  const chunks: Uint8Array[] = [];
  const turnsBefore: number[] = [];
  try {
    const data = typeof t.data === 'function' ? await t.data() : t.data;
    for await (const chunk of data instanceof Uint8Array ? [data] : data) {
      turnsBefore.push(turns);
      turns = 0;
      chunks.push(chunk);
    }
  } finally {
    ticking = false;
  }
  return { bytes: Buffer.concat(chunks), chunks, turnsBefore };
}

/** Byte-for-byte equality (a failing toEqual would print a diff of millions of bytes). */
function expectSameBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  expect(Buffer.compare(got, want)).toBe(0);
}

describe('checkpoint tensors made by chunks', () => {
  it('an FP8 projection: chunks of whole row blocks, a loop turn before each, the codes and scales of the whole tensor', async () => {
    // 300 × 4000: a partial last row block (44 rows) and partial column blocks (4000 = 31 × 128 + 32).
    const t: PlannedTensor = { name: 'model.layers.0.mlp.down_proj.weight', shape: [300, 4000], role: 'linear' };
    const whole = quantizeBlockFp8(randomValues(t, seed), 300, 4000, 128, 128);
    const [weight, scales] = encodeTensor(t, seed, 'bfloat16', [128, 128], none);
    const codes = await chunksWithTurns(weight!);
    expect(codes.chunks.map((c) => c.length)).toEqual([256 * 4000, 44 * 4000]);
    expect(codes.chunks.every((c) => c.length <= CHUNK_VALUES)).toBe(true);
    expect(Math.min(...codes.turnsBefore)).toBeGreaterThanOrEqual(1);
    expectSameBytes(codes.bytes, whole.codes);
    expect(scales!.name).toBe('model.layers.0.mlp.down_proj.weight_scale_inv');
    expect(scales!.shape).toEqual([3, 32]);
    expectSameBytes((await chunksWithTurns(scales!)).bytes, new Uint8Array(whole.scaleInv.buffer));
  });

  it("an FP8 projection's scales asked for before its codes are still the whole tensor's", async () => {
    const t: PlannedTensor = { name: 'model.layers.1.self_attn.o_proj.weight', shape: [260, 300], role: 'linear' };
    const whole = quantizeBlockFp8(randomValues(t, seed), 260, 300, 128, 128);
    const [, scales] = encodeTensor(t, seed, 'bfloat16', [128, 128], none);
    expectSameBytes((await chunksWithTurns(scales!)).bytes, new Uint8Array(whole.scaleInv.buffer));
  });

  it('a BF16 embedding table of 3M values: chunks of at most CHUNK_VALUES values, a loop turn before each, the bytes of the whole table', async () => {
    const t: PlannedTensor = { name: 'model.embed_tokens.weight', shape: [3000, 1000], role: 'embedding' };
    const [table] = encodeTensor(t, seed, 'bfloat16', null, none);
    const { bytes, chunks, turnsBefore } = await chunksWithTurns(table!);
    expect(chunks.length).toBe(3);
    expect(chunks.every((c) => c.length / 2 <= CHUNK_VALUES)).toBe(true);
    expect(Math.min(...turnsBefore)).toBeGreaterThanOrEqual(1);
    expectSameBytes(bytes, float32ToBf16Bytes(randomValues(t, seed)));
  });
});
