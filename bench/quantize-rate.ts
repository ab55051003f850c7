/**
 * The quantisers alone on one matrix of DeepSeek-R1's expert width (2048 × 7168, FP8 in 128×128 blocks made from
 * random values), best of 4 after a warm-up, in one process: widening FP8 to float32 (dequantizeBlockFp8), the
 * replaced quantiser (test/helpers/quantizer-reference.ts), the fast quantizeBlockwise, and quantizeScaledCodes
 * straight from the codes. Console output only.
 *   node --import tsx bench/quantize-rate.ts
 */
import { quantizeBlockwise, quantizeScaledCodes } from '@expertmesh/tensor-ops';
import { bytesToFloat32, dequantizeBlockFp8, float32ToBf16Bytes, FP8_E4M3_TABLE, quantizeBlockFp8 } from '@expertmesh/weights';
import { quantizeBlockwiseReference } from '../test/helpers/quantizer-reference.js';
import { seededRandom } from './random-routing.js';

const [rows, cols] = [2048, 7168];
const random = seededRandom(1);
const w0 = Float32Array.from({ length: rows * cols }, () => (random() + random() + random() - 1.5) * 0.02);
const { codes, scaleInv } = quantizeBlockFp8(w0, rows, cols, 128, 128);
const bf16 = float32ToBf16Bytes(w0);
const n = rows * cols;

function time(name: string, f: () => unknown): void {
  f();
  const t: number[] = [];
  for (let k = 0; k < 4; k++) {
    const start = performance.now();
    f();
    t.push(performance.now() - start);
  }
  const best = Math.min(...t);
  console.log(name.padEnd(40), best.toFixed(1), 'ms', (n / 1e3 / best).toFixed(0), 'M values/s');
}

const widened = dequantizeBlockFp8(codes, scaleInv, rows, cols, 128, 128);
time('dequantizeBlockFp8', () => dequantizeBlockFp8(codes, scaleInv, rows, cols, 128, 128));
time('bf16 widen', () => bytesToFloat32('BF16', bf16));
for (const [bits, block] of [
  [8, 128],
  [4, 32],
] as const) {
  time(`reference ${bits}`, () => quantizeBlockwiseReference(widened, rows, cols, bits, block));
  time(`quantizeBlockwise ${bits}`, () => quantizeBlockwise(widened, rows, cols, bits, block));
  time(`quantizeScaledCodes ${bits}`, () => quantizeScaledCodes({ codes, values: FP8_E4M3_TABLE, scales: scaleInv, rows, cols, blockRows: 128, blockCols: 128 }, bits, block));
}
