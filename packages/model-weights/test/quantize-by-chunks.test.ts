import { describe, expect, it } from 'vitest';
import { quantizeBlockwise } from '@expertmesh/tensor-ops';
import { CHUNK_VALUES } from '@expertmesh/weights';
import { quantizeBlockwiseByChunks } from '../src/quantize-by-chunks.js';
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
