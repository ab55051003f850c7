import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig } from '@expertmesh/model-config';
import { readQuantized } from '@expertmesh/model-weights';
import { quantizeScaledCodes, scaledCodesQuantizable, type QuantizedBits, type ScaledCodes } from '@expertmesh/tensor-ops';
import { dequantizeBlockFp8, FP8_E4M3_TABLE, quantizeBlockFp8, readLinearWeight, SafetensorsCheckpoint } from '@expertmesh/weights';
import { quantizeBlockwiseReference } from '../../../test/helpers/quantizer-reference.js';
import { quantizedDifference } from '../../../test/helpers/quantized-equality.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { rng } from '../../../test/reference-selftest/tiny-checkpoint.js';

/**
 * Quantising FP8 weights at load straight from their codes (quantizeScaledCodes, through readQuantized) gives
 * what widening them to float32 and running the replaced quantiser gave, bit for bit: every FP8 code (NaN
 * included), scales of every kind (negative, zero, subnormal products, products past float32's range), whole
 * and partial scale blocks, ties; and, on a real checkpoint, every matrix the loader quantises.
 */
const FORMATS: [QuantizedBits, number][] = [
  [8, 128],
  [4, 32],
  [8, 32],
  [4, 16],
];

function expectSameAsWidened(m: ScaledCodes, bits: QuantizedBits, block: number): void {
  const widened = dequantizeBlockFp8(m.codes, m.scales, m.rows, m.cols, m.blockRows, m.blockCols);
  expect(quantizedDifference(quantizeScaledCodes(m, bits, block), quantizeBlockwiseReference(widened, m.rows, m.cols, bits, block))).toBeNull();
}

function fp8(rows: number, cols: number, blockRows: number, blockCols: number, code: () => number, scale: () => number): ScaledCodes {
  const scales = Float32Array.from({ length: Math.ceil(rows / blockRows) * Math.ceil(cols / blockCols) }, scale);
  return { codes: Uint8Array.from({ length: rows * cols }, code), values: FP8_E4M3_TABLE, scales, rows, cols, blockRows, blockCols };
}

describe('quantizeScaledCodes equals widening FP8 then the replaced quantiser, bit for bit', () => {
  for (const [bits, block] of FORMATS) {
    it(`${bits}-bit, ${block}-column blocks: any code, any finite scale, whole and partial scale blocks`, () => {
      const random = rng(bits * 100 + block);
      const kinds = [() => (random() - 0.5) * 2 ** (random() * 20 - 24), () => 0, () => -0, () => -(random() * 1e-3), () => 1e-44, () => 3e37, () => 2 ** Math.floor(random() * 10 - 12)];
      const scale = (): number => kinds[Math.floor(random() * kinds.length)]!();
      for (const [rows, cols, blockRows, blockCols] of [
        [300, 700, 128, 128],
        [129, 257, 128, 128],
        [40, 3 * block, 16, block],
        [33, 2 * block + 5, 8, 2 * block],
      ] as [number, number, number, number][]) {
        expectSameAsWidened(fp8(rows, cols, blockRows, blockCols, () => Math.floor(random() * 256), scale), bits, block);
      }
    });

    it(`${bits}-bit, ${block}-column blocks: checkpoint-like codes (each scale block reaching ±448), blocks of NaN codes and of zeros`, () => {
      const random = rng(bits + block);
      const [rows, cols] = [256, 384];
      const w = Float32Array.from({ length: rows * cols }, () => (random() + random() + random() - 1.5) * 0.02);
      const { codes, scaleInv } = quantizeBlockFp8(w, rows, cols, 128, 128);
      codes.fill(0x7f, 5 * cols, 5 * cols + block); // NaN (positive)
      codes.fill(0xff, 6 * cols + block, 6 * cols + 2 * block); // NaN (negative)
      codes.fill(0x00, 7 * cols, 7 * cols + block);
      codes.fill(0x80, 8 * cols, 8 * cols + block); // -0
      for (let i = 9 * cols; i < 10 * cols; i += 3) codes[i] = 0xff; // NaN beside values
      expectSameAsWidened({ codes, values: FP8_E4M3_TABLE, scales: scaleInv, rows, cols, blockRows: 128, blockCols: 128 }, bits, block);
    });
  }

  it('4-bit: ties at .5 (a power-of-two scale and codes at odd multiples of amax / 14) round half towards +∞', () => {
    const [rows, cols] = [64, 256];
    const random = rng(3);
    // 448 (0x7e) in every 32-column block, so its scale is 448·s / 7 = 64·s exactly, and the codes of ±32, ±96,
    // ±160 … (odd multiples of 32) fall half way between two 4-bit codes.
    const tieCodes = [...FP8_E4M3_TABLE.keys()].filter((c) => Math.abs(FP8_E4M3_TABLE[c]! / 64) % 1 === 0.5);
    const codes = Uint8Array.from({ length: rows * cols }, (_, i) => (i % 32 === 0 ? 0x7e : random() < 0.6 ? tieCodes[Math.floor(random() * tieCodes.length)]! : Math.floor(random() * 0x7f)));
    const m: ScaledCodes = { codes, values: FP8_E4M3_TABLE, scales: Float32Array.from({ length: 4 }, (_, i) => 2 ** (i - 6)), rows, cols, blockRows: 32, blockCols: 128 };
    const ties = [...codes].filter((c) => tieCodes.includes(c)).length;
    expect(tieCodes.length).toBeGreaterThanOrEqual(10);
    expect(ties).toBeGreaterThan(codes.length / 2);
    expectSameAsWidened(m, 4, 32);
  });

  it('takes only scale blocks that hold whole quantised blocks and finite scales, and says what to do otherwise', () => {
    const ok = fp8(64, 256, 64, 128, () => 1, () => 0.5);
    expect(scaledCodesQuantizable(ok, 128)).toBe(true);
    const narrow = fp8(64, 256, 64, 64, () => 1, () => 0.5);
    expect(scaledCodesQuantizable(narrow, 128)).toBe(false);
    expect(() => quantizeScaledCodes(narrow, 8, 128)).toThrow(/use quantizeBlockwise/);
    for (const bad of [Infinity, -Infinity, NaN]) {
      const m = fp8(64, 256, 64, 128, () => 1, () => bad);
      expect(scaledCodesQuantizable(m, 32)).toBe(false);
    }
    expect(() => quantizeScaledCodes({ ...ok, codes: new Uint8Array(5) }, 8, 128)).toThrow(/expected 64×256/);
  });
});

describe('readQuantized: every matrix of a checkpoint as the replaced quantiser gave it', () => {
  let dirs: { path: string; remove: () => Promise<void> }[] = [];
  beforeAll(async () => {
    dirs = await Promise.all(['fp8-128', 'fp8-32', 'bf16'].map((p) => tempDir(`quantize-at-load-${p}`)));
    await makeCheckpoint({ preset: 'tiny', outDir: dirs[0]!.path, seed: 4, fp8: true });
    // 32×32 FP8 blocks: int4's 32-column blocks go straight from the codes, int8's 128 do not fit and are widened.
    await makeCheckpoint({ preset: 'tiny', outDir: dirs[1]!.path, seed: 4, fp8: true, fp8BlockSize: [32, 32] });
    await makeCheckpoint({ preset: 'tiny', outDir: dirs[2]!.path, seed: 4 });
  });
  afterAll(async () => Promise.all(dirs.map((d) => d.remove())));

  for (const [i, what] of ['FP8 in 128×128 blocks', 'FP8 in 32×32 blocks', 'BF16'].entries()) {
    it(what, async () => {
      const dir = dirs[i]!.path;
      const config = await loadModelConfig(dir);
      const checkpoint = await SafetensorsCheckpoint.open(dir);
      try {
        const blockSize = config.quantization?.weightBlockSize ?? null;
        const names = checkpoint.names().filter((n) => /(proj|lm_head)\.weight$/.test(n) && checkpoint.info(n).shape.length === 2);
        expect(names.length).toBeGreaterThan(20);
        expect(names.every((n) => checkpoint.info(n).dtype === (i < 2 ? 'F8_E4M3' : 'BF16') || n === 'lm_head.weight')).toBe(true);
        for (const name of names) {
          const [rows, cols] = checkpoint.info(name).shape as [number, number];
          const widened = await readLinearWeight(checkpoint, name, blockSize);
          for (const [bits, block] of [
            [8, 128],
            [4, 32],
          ] as [QuantizedBits, number][]) {
            const difference = quantizedDifference(await readQuantized(checkpoint, name, blockSize, rows, cols, bits, block), quantizeBlockwiseReference(widened, rows, cols, bits, block));
            expect(difference, `${name} ${bits}-bit`).toBeNull();
          }
        }
      } finally {
        await checkpoint.close();
      }
    });
  }
});
