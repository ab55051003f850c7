import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dequantizeBlockFp8, FP8_E4M3_TABLE, quantizeBlockFp8, readLinearWeight, SafetensorsCheckpoint, writeShardedCheckpoint, type LazyTensor } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 4);
}

const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('block-wise FP8', () => {
  for (const [rows, cols, br, bc] of [
    [130, 300, 128, 128],
    [5, 7, 4, 4],
    [64, 64, 128, 128],
    [256, 128, 128, 128],
    [3, 10, 1, 3],
  ] as const) {
    it(`${rows}×${cols} in ${br}×${bc} blocks: scale grid, per-block amax, exact dequantisation, bounded error`, () => {
      const w = random(rows * cols, rows + cols);
      const { codes, scaleInv } = quantizeBlockFp8(w, rows, cols, br, bc);
      const gridCols = Math.ceil(cols / bc);
      expect(scaleInv.length).toBe(Math.ceil(rows / br) * gridCols);
      // Each block's scale is its own amax / 448, partial edge blocks included.
      const amax = new Float64Array(scaleInv.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
        const b = Math.floor(r / br) * gridCols + Math.floor(c / bc);
        amax[b] = Math.max(amax[b]!, Math.abs(w[r * cols + c]!));
      }
      amax.forEach((m, b) => expect(scaleInv[b]).toBe(Math.fround(m / 448)));
      const deq = dequantizeBlockFp8(codes, scaleInv, rows, cols, br, bc);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const scale = scaleInv[Math.floor(r / br) * gridCols + Math.floor(c / bc)]!;
          // Exactly the per-element formula, in float32.
          const exact = Math.fround(FP8_E4M3_TABLE[codes[i]!]! * scale);
          // Round to nearest with 3 mantissa bits: at most half a step of 2^-3 relative, or half a subnormal step.
          const bound = Math.max(Math.abs(w[i]!) * 2 ** -4, scale * 2 ** -10) * 1.0001;
          if (deq[i] !== exact || !(Math.abs(deq[i]! - w[i]!) <= bound)) expect({ r, c, deq: deq[i], err: Math.abs(deq[i]! - w[i]!) }).toEqual({ r, c, deq: exact, err: bound });
        }
      }
    });
  }

  it('the largest value of each block is stored as ±448 × scale', () => {
    const w = Float32Array.from([1, -3, 0.5, 2, 10, 0, 0, -20, 7]);
    const { codes, scaleInv } = quantizeBlockFp8(w, 3, 3, 2, 2);
    // Blocks: {1, -3, 2, 10}, {0.5, 0}, {0, -20}, {7}.
    expect(Array.from(scaleInv)).toEqual([10 / 448, 0.5 / 448, 20 / 448, 7 / 448].map(Math.fround));
    expect([4, 2, 7, 8].map((i) => FP8_E4M3_TABLE[codes[i]!])).toEqual([448, 448, -448, 448]);
  });

  it('an all-zero block gets scale 1 and zero codes', () => {
    const { codes, scaleInv } = quantizeBlockFp8(new Float32Array(16), 4, 4, 4, 4);
    expect(Array.from(scaleInv)).toEqual([1]);
    expect(codes.every((c) => c === 0)).toBe(true);
  });

  it('rejects sizes that do not match the data', () => {
    expect(() => dequantizeBlockFp8(new Uint8Array(35), new Float32Array(3), 5, 7, 4, 4)).toThrow(/3 scales .*needs 4/);
    expect(() => dequantizeBlockFp8(new Uint8Array(34), new Float32Array(4), 5, 7, 4, 4)).toThrow(/34 values for a 5×7/);
    expect(() => quantizeBlockFp8(new Float32Array(4), 2, 2, 0, 2)).toThrow(RangeError);
  });
});

describe('readLinearWeight', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let ck: SafetensorsCheckpoint;
  const w = random(5 * 7, 3);
  const q = quantizeBlockFp8(w, 5, 7, 4, 4);

  beforeAll(async () => {
    dir = await tempDir('fp8-block');
    const tensors: LazyTensor[] = [
      { name: 'p.weight', dtype: 'F8_E4M3', shape: [5, 7], data: q.codes },
      { name: 'p.weight_scale_inv', dtype: 'F32', shape: [2, 2], data: bytes(q.scaleInv) },
      { name: 'orphan.weight', dtype: 'F8_E4M3', shape: [2, 2], data: new Uint8Array(4) },
      { name: 'flat.weight', dtype: 'F8_E4M3', shape: [4], data: new Uint8Array(4) },
      { name: 'bf.weight', dtype: 'BF16', shape: [1, 2], data: Uint8Array.of(0x80, 0x3f, 0x00, 0xc0) },
    ];
    await writeShardedCheckpoint(dir.path, tensors, 2);
    ck = await SafetensorsCheckpoint.open(dir.path);
  });
  afterAll(async () => {
    await ck?.close();
    await dir?.remove();
  });

  it('dequantises an FP8 weight with its sibling scales (partial blocks)', async () => {
    expect(Array.from(await readLinearWeight(ck, 'p.weight', [4, 4]))).toEqual(Array.from(dequantizeBlockFp8(q.codes, q.scaleInv, 5, 7, 4, 4)));
  });

  it('converts other dtypes directly and ignores the block size', async () => {
    expect(Array.from(await readLinearWeight(ck, 'bf.weight', null))).toEqual([1, -2]);
  });

  it('names both tensors when the scales are missing or of the wrong shape', async () => {
    await expectCheckpointError(readLinearWeight(ck, 'orphan.weight', [128, 128]), /model-0000\d-of-00002\.safetensors$/, 'orphan.weight', /scale tensor "orphan\.weight_scale_inv" is missing/);
    await expectCheckpointError(readLinearWeight(ck, 'p.weight', [2, 2]), /model-0000\d-of-00002\.safetensors$/, 'p.weight_scale_inv', /"p\.weight" \[5, 7\] in 2×2 blocks .* needs \[3, 4\]/);
  });

  it('needs a block size and a 2-D weight', async () => {
    await expectCheckpointError(readLinearWeight(ck, 'p.weight', null), /safetensors$/, 'p.weight', /weight_block_size/);
    await expectCheckpointError(readLinearWeight(ck, 'flat.weight', [4, 4]), /safetensors$/, 'flat.weight', /must be 2-D/);
  });

  it('a missing weight names the checkpoint and the tensor', async () => {
    await expectCheckpointError(readLinearWeight(ck, 'nope.weight', [4, 4]), new RegExp(`${join(dir.path, 'model.safetensors.index.json').replace(/[.]/g, '\\.')}$`), 'nope.weight', /not found/);
  });
});
