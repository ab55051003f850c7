import { describe, expect, it } from 'vitest';
import { quantizeBlockwise, quantizeScaledCodes, type ScaledCodes } from '@expertmesh/tensor-ops';
import { CHUNK_VALUES, FP8_E4M3_TABLE } from '@expertmesh/weights';
import { quantizeBlockwiseByChunks, quantizeScaledCodesByChunks } from '../src/quantize-by-chunks.js';
import { loopTurnsDuring } from '../../../test/helpers/loop-turns.js';

describe('quantizeBlockwiseByChunks (int8/int4 weights of real width quantised at load)', () => {
  for (const [bits, block] of [
    [8, 128],
    [4, 32],
  ] as const) {
    it(`int${bits}: the codes and scales of the whole matrix, with a loop turn between chunks of rows`, async () => {
      // 1000 columns (a partial last block), rows for 2.5 chunks.
      const cols = 1000;
      const rows = Math.ceil((2.5 * CHUNK_VALUES) / cols);
      const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.7) * (1 + (i % 5)));
      const { result, turns } = await loopTurnsDuring(() => quantizeBlockwiseByChunks(w, rows, cols, bits, block));
      const whole = quantizeBlockwise(w, rows, cols, bits, block);
      expect(turns).toBeGreaterThanOrEqual(2);
      expect({ ...result, codes: null, scales: null }).toEqual({ ...whole, codes: null, scales: null });
      expect(Buffer.compare(result.codes, whole.codes)).toBe(0);
      expect(Buffer.compare(new Uint8Array(result.scales.buffer), new Uint8Array(whole.scales.buffer))).toBe(0);
    });
  }
});

describe('quantizeScaledCodesByChunks (FP8 codes with 128×128 block scales quantised at load)', () => {
  for (const [bits, block] of [
    [8, 128],
    [4, 32],
  ] as const) {
    it(`int${bits}: the codes and scales of the whole matrix, by runs of whole scale-block rows with a loop turn between`, async () => {
      // 1000 columns (partial last scale and int blocks), rows for ~2.5 chunks and a partial last scale-block row.
      const cols = 1000;
      const rows = Math.ceil((2.5 * CHUNK_VALUES) / cols) + 37;
      const scaleCols = Math.ceil(cols / 128);
      const codes = Uint8Array.from({ length: rows * cols }, (_, i) => (i * 2654435761) >>> 24);
      const scales = Float32Array.from({ length: Math.ceil(rows / 128) * scaleCols }, (_, i) => 2 ** -((i % 9) + 4) * (1 + (i % 3) / 7));
      const m: ScaledCodes = { codes, values: FP8_E4M3_TABLE, scales, rows, cols, blockRows: 128, blockCols: 128 };
      const { result, turns } = await loopTurnsDuring(() => quantizeScaledCodesByChunks(m, bits, block));
      const whole = quantizeScaledCodes(m, bits, block);
      expect(turns).toBeGreaterThanOrEqual(2);
      expect({ ...result, codes: null, scales: null }).toEqual({ ...whole, codes: null, scales: null });
      expect(Buffer.compare(result.codes, whole.codes)).toBe(0);
      expect(Buffer.compare(new Uint8Array(result.scales.buffer), new Uint8Array(whole.scales.buffer))).toBe(0);
    });
  }
});
